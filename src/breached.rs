//! Offline lists of breached or common passwords, searched on disk: a binary search over
//! the byte offsets of a sorted text file, so memory stays flat and the whole Pwned
//! Passwords list (tens of GB) works as well as a short list.
//!
//! Two formats, told apart by the first line:
//! - **SHA-1** (the Pwned Passwords text download): `SHA1HEX:COUNT` or `SHA1HEX` per
//!   line, sorted by hash (either case; compared upper-cased). The password's SHA-1 is
//!   looked up; the file never holds the passwords themselves.
//! - **Plain**: one password per line, sorted bytewise (`LC_ALL=C sort -u`). The password is
//!   looked up exactly as typed.
//!
//! Lines may end in `\n` or `\r\n`. An unsorted file gives wrong answers, so [`open`]
//! checks the order of the lines it reads first.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

/// Below this many bytes between the bounds the search reads lines in turn.
const SCAN: u64 = 4096;

/// Lines longer than this are not a password list (and would make a lookup read far).
const MAX_LINE: usize = 4096;

/// Lines [`open`] reads from the start to check the order and the format.
const CHECKED_LINES: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sha1,
    Plain,
}

/// A sorted list on disk; see the module documentation.
#[derive(Debug, Clone)]
pub struct BreachedList {
    path: PathBuf,
    format: Format,
}

/// Why a list cannot be used, in words for an operator.
pub type ListError = String;

/// The list a core was given (authd's `--breached-passwords`): [`crate::policy::Policy`]
/// uses it for new passwords whenever the policy key `password.breached_passwords` names
/// none. Each core has its own (two cores in one process share nothing) and lends it to
/// every connection it opens, where [`crate::policy::Policy::load`] finds it.
#[derive(Debug, Default)]
pub struct CoreList(std::sync::OnceLock<PathBuf>);

impl CoreList {
    /// Checked with [`open`] first; set once (`Ok(false)`: a list was already set, this
    /// one is not).
    pub fn set(&self, path: &Path) -> Result<bool, ListError> {
        open(path)?;
        Ok(self.0.set(path.to_path_buf()).is_ok())
    }

    /// The list, once set.
    pub fn get(&self) -> Option<&Path> {
        self.0.get().map(PathBuf::as_path)
    }
}

/// The list at `path`: checks that it is a readable regular file, tells its format from the
/// first line and checks that its first lines are sorted.
pub fn open(path: &Path) -> Result<BreachedList, ListError> {
    let describe = |e: std::io::Error| format!("{}: {e}", path.display());
    let meta = std::fs::metadata(path).map_err(describe)?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    let file = File::open(path).map_err(describe)?;
    let mut r = BufReader::new(file);
    let mut buf = Vec::new();
    let mut format = None;
    let mut prev: Option<Vec<u8>> = None;
    for n in 0..CHECKED_LINES {
        let Some(line) = read_line(&mut r, &mut buf).map_err(describe)? else {
            break;
        };
        let f = *format.get_or_insert(if is_sha1_line(line) {
            Format::Sha1
        } else {
            Format::Plain
        });
        if f == Format::Sha1 && !is_sha1_line(line) {
            return Err(format!(
                "{}: line {} is not SHA1HEX[:COUNT] like the first",
                path.display(),
                n + 1
            ));
        }
        let k = key(f, line);
        if prev.as_deref().is_some_and(|p| p > k.as_slice()) {
            return Err(format!(
                "{}: not sorted (line {}); sort it with LC_ALL=C sort",
                path.display(),
                n + 1
            ));
        }
        prev = Some(k);
    }
    Ok(BreachedList {
        path: path.to_path_buf(),
        format: format.unwrap_or(Format::Plain),
    })
}

impl BreachedList {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether `password` is on the list.
    pub fn contains(&self, password: &str) -> std::io::Result<bool> {
        let target = match self.format {
            Format::Sha1 => data_encoding::HEXUPPER
                .encode(&Sha1::digest(password.as_bytes()))
                .into_bytes(),
            Format::Plain => password.as_bytes().to_vec(),
        };
        let mut file = File::open(&self.path)?;
        let len = file.metadata()?.len();
        let mut buf = Vec::new();
        // Invariant: every line starting before `lo` sorts below the target, and the first
        // line that does not starts at or before the first line starting at or after `hi`.
        let (mut lo, mut hi) = (0u64, len);
        while hi - lo > SCAN {
            let mid = lo + (hi - lo) / 2;
            match next_line_at(&mut file, mid, &mut buf)? {
                Some((start, line)) if key(self.format, line) < target => lo = start,
                _ => hi = mid,
            }
        }
        file.seek(SeekFrom::Start(lo))?;
        let mut r = BufReader::new(file);
        while let Some(line) = read_line(&mut r, &mut buf)? {
            let k = key(self.format, line);
            match k.as_slice().cmp(&target) {
                std::cmp::Ordering::Less => continue,
                std::cmp::Ordering::Equal => return Ok(true),
                std::cmp::Ordering::Greater => return Ok(false),
            }
        }
        Ok(false)
    }
}

/// The first whole line starting after offset `pos` - 1 (a line starting exactly at `pos`
/// counts only when `pos` is 0 or follows a newline): its start and its text.
fn next_line_at<'b>(
    file: &mut File,
    pos: u64,
    buf: &'b mut Vec<u8>,
) -> std::io::Result<Option<(u64, &'b [u8])>> {
    let from = pos.saturating_sub(1);
    file.seek(SeekFrom::Start(from))?;
    // Small reads: a line of the list is ~45 bytes (longer ones refill the buffer).
    let mut r = BufReader::with_capacity(256, &mut *file);
    let mut start = from;
    if pos > 0 {
        // Skip to just after the next newline (the byte before `pos` may be it).
        let mut skipped = Vec::new();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut skipped)?;
        if n == 0 || skipped.last() != Some(&b'\n') {
            return Ok(None);
        }
        start += n as u64;
    }
    match read_line(&mut r, buf)? {
        Some(_) => Ok(Some((start, trim(buf)))),
        None => Ok(None),
    }
}

/// The next line without its line end, or None at the end of the file. Over-long lines
/// are an error (the file is not a password list).
fn read_line<'b, R: BufRead>(r: &mut R, buf: &'b mut Vec<u8>) -> std::io::Result<Option<&'b [u8]>> {
    buf.clear();
    let n = r.take(MAX_LINE as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a line longer than {MAX_LINE} bytes"),
        ));
    }
    Ok(Some(trim(buf)))
}

fn trim(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_sha1_line(line: &[u8]) -> bool {
    let (hash, rest) = line.split_at(line.len().min(40));
    hash.len() == 40
        && hash.iter().all(u8::is_ascii_hexdigit)
        && (rest.is_empty()
            || (rest[0] == b':' && rest.len() > 1 && rest[1..].iter().all(u8::is_ascii_digit)))
}

/// What a line is sorted by: the upper-cased hash, or the whole line.
fn key(format: Format, line: &[u8]) -> Vec<u8> {
    match format {
        Format::Sha1 => line[..line.len().min(40)].to_ascii_uppercase(),
        Format::Plain => line.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn sha1_hex(p: &str) -> String {
        data_encoding::HEXUPPER.encode(&Sha1::digest(p.as_bytes()))
    }

    fn write(dir: &Path, name: &str, lines: &[String], crlf: bool) -> PathBuf {
        let path = dir.join(name);
        let mut f = std::io::BufWriter::new(File::create(&path).unwrap());
        for l in lines {
            f.write_all(l.as_bytes()).unwrap();
            f.write_all(if crlf { b"\r\n" } else { b"\n" }).unwrap();
        }
        f.flush().unwrap();
        path
    }

    #[test]
    fn sha1_lists_find_every_listed_password_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let listed: Vec<String> = (0..20_000).map(|i| format!("pw{i}")).collect();
        let mut lines: Vec<String> = listed
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}:{}", sha1_hex(p), i + 1))
            .collect();
        lines.sort();
        for crlf in [false, true] {
            let path = write(dir.path(), &format!("list{crlf}"), &lines, crlf);
            let list = open(&path).unwrap();
            assert_eq!(list.format(), Format::Sha1);
            for p in listed
                .iter()
                .step_by(97)
                .chain([&listed[0], listed.last().unwrap()])
            {
                assert!(list.contains(p).unwrap(), "{p} is listed");
            }
            for p in ["pw20000", "", "PW1", "pw1 ", "correct horse battery staple"] {
                assert!(!list.contains(p).unwrap(), "{p:?} is not listed");
            }
        }
        // The first and the last line of the file, whatever they are.
        let first = lines.first().unwrap();
        let last = lines.last().unwrap();
        let path = write(dir.path(), "edges", &lines, false);
        let list = open(&path).unwrap();
        for l in [first, last] {
            let p = listed.iter().find(|p| l.starts_with(&sha1_hex(p))).unwrap();
            assert!(list.contains(p).unwrap());
        }
    }

    #[test]
    fn lower_case_hashes_and_bare_hashes_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines: Vec<String> = ["password", "letmein", "123456"]
            .iter()
            .map(|p| sha1_hex(p).to_lowercase())
            .collect();
        lines.sort();
        let list = open(&write(dir.path(), "l", &lines, false)).unwrap();
        assert_eq!(list.format(), Format::Sha1);
        assert!(list.contains("letmein").unwrap());
        assert!(!list.contains("letmein2").unwrap());
    }

    #[test]
    fn plain_lists_are_searched_bytewise() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines: Vec<String> = (0..5000).map(|i| format!("común{i:05}")).collect();
        lines.push("Passw0rd!".into());
        lines.sort();
        let list = open(&write(dir.path(), "plain", &lines, false)).unwrap();
        assert_eq!(list.format(), Format::Plain);
        assert!(list.contains("común04999").unwrap());
        assert!(list.contains("Passw0rd!").unwrap());
        assert!(!list.contains("passw0rd!").unwrap());
        assert!(!list.contains("común5000").unwrap());
    }

    #[test]
    fn unusable_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let unsorted = write(dir.path(), "u", &["b".into(), "a".into()], false);
        assert!(open(&unsorted).unwrap_err().contains("not sorted"));
        let mixed = write(
            dir.path(),
            "m",
            &[sha1_hex("a"), "not a hash".into()],
            false,
        );
        assert!(open(&mixed).unwrap_err().contains("line 2"));
        assert!(open(&dir.path().join("missing")).is_err());
        assert!(open(dir.path()).unwrap_err().contains("not a regular file"));
        let long = write(dir.path(), "long", &["x".repeat(MAX_LINE + 10)], false);
        assert!(open(&long).is_err());
        // An empty list is a list with nothing on it.
        let empty = write(dir.path(), "empty", &[], false);
        assert!(!open(&empty).unwrap().contains("a").unwrap());
    }
}
