//! The protobuf wire format, for the few messages the shim reads or writes
//! by hand instead of carrying their schema (the runtime options, runc's
//! options, CRI's pod config, runc's ProcessDetails): varints,
//! length-delimited fields, and a reader of a message's fields.

use crate::error::{Error, Result};

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

/// One field of a protobuf message, as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed32 or fixed64, which no field barge reads has.
    Fixed,
}

impl<'a> Value<'a> {
    /// A length-delimited field as UTF-8 text; `message` is named on error.
    pub fn text(&self, message: &str) -> Result<String> {
        String::from_utf8(self.bytes(message)?.to_vec()).map_err(|_| {
            Error::InvalidArgument(format!("malformed {message}: a string is not UTF-8"))
        })
    }

    /// A length-delimited field (a string or a nested message).
    pub fn bytes(&self, message: &str) -> Result<&'a [u8]> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(Error::InvalidArgument(format!(
                "malformed {message}: a string field is not length-delimited"
            ))),
        }
    }

    /// A varint field.
    pub fn varint(&self, message: &str) -> Result<u64> {
        match self {
            Value::Varint(n) => Ok(*n),
            _ => Err(Error::InvalidArgument(format!(
                "malformed {message}: a number field is not a varint"
            ))),
        }
    }
}

/// The fields of a protobuf message, in wire order. `message` names it in
/// the error when the bytes are not protobuf (truncated, a group, field
/// number 0).
pub fn fields<'a>(mut buf: &'a [u8], message: &str) -> Result<Vec<(u64, Value<'a>)>> {
    let bad = || Error::InvalidArgument(format!("malformed {message}"));
    let mut out = Vec::new();
    while !buf.is_empty() {
        let (key, rest) = read_varint(buf).ok_or_else(bad)?;
        buf = rest;
        let value = match key & 7 {
            0 => {
                let (v, rest) = read_varint(buf).ok_or_else(bad)?;
                buf = rest;
                Value::Varint(v)
            }
            1 => {
                buf = buf.get(8..).ok_or_else(bad)?;
                Value::Fixed
            }
            5 => {
                buf = buf.get(4..).ok_or_else(bad)?;
                Value::Fixed
            }
            2 => {
                let (len, rest) = read_varint(buf).ok_or_else(bad)?;
                let len = usize::try_from(len).map_err(|_| bad())?;
                let value = rest.get(..len).ok_or_else(bad)?;
                buf = &rest[len..];
                Value::Bytes(value)
            }
            _ => return Err(bad()),
        };
        // Field number 0 is not protobuf.
        if key >> 3 == 0 {
            return Err(bad());
        }
        out.push((key >> 3, value));
    }
    Ok(out)
}

fn read_varint(buf: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &buf[i + 1..]));
        }
    }
    None
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
        let f = fields(&m, "m").unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!(f[0], (1, Value::Varint(100_000)));
        assert_eq!(f[1].1.text("m").unwrap(), "hi");
        assert_eq!(f[2].1.varint("m").unwrap(), u64::MAX);
        assert!(fields(&[0x0a, 0x05, b'a'], "m").is_err());
        assert!(fields(&[0xff; 11], "m").is_err());
        assert!(f[0].1.bytes("m").is_err() && f[1].1.varint("m").is_err());
    }

    #[test]
    fn wire_fields() {
        // field 1 varint 150, field 2 "hi", field 3 fixed32
        let bytes = [0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i', 0x1d, 1, 2, 3, 4];
        let f = fields(&bytes, "m").unwrap();
        assert_eq!(
            f,
            vec![
                (1, Value::Varint(150)),
                (2, Value::Bytes(b"hi")),
                (3, Value::Fixed)
            ]
        );
        assert!(fields(&[0x08], "m").is_err());
        assert!(fields(&[0x12, 0x05, b'x'], "m").is_err());
    }
}
