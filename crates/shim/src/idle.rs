//! Memory of an idle shim.
//!
//! Most of a shim's resident memory is its own code, mapped from the page
//! cache, plus what malloc keeps. A shim that serves a sleeping container
//! runs none of that code, so once requests stop for a moment it unmaps
//! every clean file page and returns free heap to the kernel. The page cache
//! keeps the pages: the next request maps back only what it runs, as minor
//! faults, and the shims of other containers lose nothing.

use std::time::Duration;

use tokio::sync::Notify;

/// How long the shim must be quiet before it trims.
const QUIET: Duration = Duration::from_millis(250);

/// Trims after each burst of activity, forever.
pub async fn trim_when_quiet(activity: &Notify) {
    loop {
        activity.notified().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(QUIET) => break,
                _ = activity.notified() => continue,
            }
        }
        trim();
    }
}

/// Unmaps clean file-backed pages and trims the heap.
pub fn trim() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for mapping in clean_file_mappings(&smaps) {
        // SAFETY: the range is one of our own private file mappings that is
        // neither writable nor holds any anonymous (copied-on-write) page,
        // so every page in it equals the file's. MADV_DONTNEED drops the
        // page table entries, and the next access maps the same page again
        // from the page cache: nothing is lost.
        unsafe {
            libc::madvise(
                mapping.0 as *mut libc::c_void,
                mapping.1 - mapping.0,
                libc::MADV_DONTNEED,
            );
        }
    }
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The address ranges of read-only, private file mappings with no
/// anonymous pages, from the text of /proc/self/smaps.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let Some(first) = fields.next() else { continue };
        if let Some((start, end)) = first.split_once('-') {
            // A mapping header: range perms offset dev inode path.
            current = None;
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            if !path.starts_with('/') || perms.contains('w') || !perms.ends_with('p') {
                continue;
            }
            if let (Ok(s), Ok(e)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                current = Some((s, e));
            }
        } else if first == "Anonymous:" {
            if let Some(range) = current.take() {
                if fields.next() == Some("0") {
                    out.push(range);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings() {
        let smaps = "\
55d0-55e0 r--p 00000000 fe:00 123 /usr/bin/shim
Rss: 640 kB
Anonymous: 0 kB
55e0-55f0 r-xp 00010000 fe:00 123 /usr/bin/shim
Anonymous: 0 kB
55f0-5600 r--p 00020000 fe:00 123 /usr/bin/shim
Anonymous: 464 kB
5600-5610 rw-p 00030000 fe:00 123 /usr/bin/shim
Anonymous: 24 kB
5610-5620 rw-p 00000000 00:00 0 [heap]
Anonymous: 456 kB
5620-5630 r--s 00000000 fe:00 9 /dev/shm/x
Anonymous: 0 kB
";
        assert_eq!(
            clean_file_mappings(smaps),
            vec![(0x55d0, 0x55e0), (0x55e0, 0x55f0)]
        );
    }

    #[test]
    fn trimming_keeps_the_process_working() {
        trim();
        // Code and read-only data come back from the page cache.
        let v: Vec<String> = (0..1000).map(|i| format!("{i}")).collect();
        assert_eq!(v[999], "999");
    }
}
