//! The protobuf wire format, for the few messages the shim reads or writes
//! by hand instead of carrying their schema: varints, length-delimited
//! fields, and a reader that walks a message's fields.

/// What is wrong with a message on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireError(pub &'static str);

/// Appends `n` as a varint.
pub fn varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Appends field `field` as a varint (wire type 0).
#[cfg(test)]
pub fn varint_field(out: &mut Vec<u8>, field: u64, n: u64) {
    varint(out, field << 3);
    varint(out, n);
}

/// Appends field `field` as length-delimited bytes (wire type 2): a
/// string, bytes or a nested message.
pub fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A field's value.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// One field of a message, read as the type the caller expects.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a>(Value<'a>);

impl<'a> Field<'a> {
    pub fn as_bytes(&self) -> Result<&'a [u8], WireError> {
        match self.0 {
            Value::Bytes(b) => Ok(b),
            Value::Varint(_) => Err(WireError("a varint where bytes were expected")),
        }
    }

    pub fn as_string(&self) -> Result<String, WireError> {
        String::from_utf8(self.as_bytes()?.to_vec()).map_err(|_| WireError("a string is not UTF-8"))
    }

    pub fn as_varint(&self) -> Result<u64, WireError> {
        match self.0 {
            Value::Varint(n) => Ok(n),
            Value::Bytes(_) => Err(WireError("bytes where a varint was expected")),
        }
    }
}

/// Calls `each` with the number and value of every field of the message in
/// `bytes`, in order, until it returns false. Fixed-size fields are skipped;
/// groups are refused.
pub fn fields<'a>(
    mut bytes: &'a [u8],
    mut each: impl FnMut(u64, Field<'a>) -> bool,
) -> Result<(), WireError> {
    while !bytes.is_empty() {
        let key = read_varint(&mut bytes)?;
        let number = key >> 3;
        let value = match key & 7 {
            0 => Value::Varint(read_varint(&mut bytes)?),
            1 => {
                bytes = bytes.get(8..).ok_or(WireError("truncated fixed64"))?;
                continue;
            }
            2 => {
                let len = usize::try_from(read_varint(&mut bytes)?)
                    .map_err(|_| WireError("length out of range"))?;
                if len > bytes.len() {
                    return Err(WireError("a length runs past the end"));
                }
                let (field, rest) = bytes.split_at(len);
                bytes = rest;
                Value::Bytes(field)
            }
            5 => {
                bytes = bytes.get(4..).ok_or(WireError("truncated fixed32"))?;
                continue;
            }
            _ => return Err(WireError("unsupported wire type")),
        };
        if number == 0 {
            return Err(WireError("field number 0"));
        }
        if !each(number, Field(value)) {
            return Ok(());
        }
    }
    Ok(())
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64, WireError> {
    let mut n = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first().ok_or(WireError("truncated varint"))?;
        *bytes = rest;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(WireError("varint longer than 10 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut m = Vec::new();
        varint_field(&mut m, 1, 100_000);
        bytes_field(&mut m, 2, b"hi");
        varint_field(&mut m, 3, u64::MAX);
        assert_eq!(&m[..4], &[0x08, 0xa0, 0x8d, 0x06]);
        let mut seen = Vec::new();
        fields(&m, |n, f| {
            seen.push(match n {
                2 => f.as_string().unwrap(),
                _ => f.as_varint().unwrap().to_string(),
            });
            true
        })
        .unwrap();
        assert_eq!(seen, ["100000", "hi", &u64::MAX.to_string()]);
        assert_eq!(
            fields(&[0x0a, 0x05, b'a'], |_, _| true),
            Err(WireError("a length runs past the end"))
        );
        assert_eq!(
            fields(&[0xff; 11], |_, _| true),
            Err(WireError("varint longer than 10 bytes"))
        );
    }
}
