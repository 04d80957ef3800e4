//! Reading the files an operator names (secrets, the config, certificates, the Redis
//! URL, the federated token, state, the metrics written before): only regular files —
//! a symlink to one is fine, as the kubelet lays out a mounted Secret — and only up to
//! a cap per kind. A FIFO would block a run for ever, and `/dev/zero` or `/dev/urandom`
//! would grow memory without end; both are refused before a byte is read.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The caps, by what a file holds.
pub const SECRET_CAP: u64 = 64 << 10;
/// A PEM bundle (a certificate with its chain, a private key, a CA).
pub const PEM_CAP: u64 = 1 << 20;
/// The YAML config file.
pub const CONFIG_CAP: u64 = 1 << 20;
/// A state file, the metrics file written before (a fleet's is a few MB).
pub const STATE_CAP: u64 = 64 << 20;

/// Why a file was not read.
#[derive(Debug)]
pub enum FileError {
    NotFound,
    /// Not a regular file: what it is.
    NotRegular(&'static str),
    /// Larger than the cap (bytes).
    TooLarge(u64),
    Io(std::io::Error),
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileError::NotFound => f.write_str("not found"),
            FileError::NotRegular(kind) => write!(f, "is {kind}, not a regular file"),
            FileError::TooLarge(cap) => write!(f, "is larger than {} KiB", cap >> 10),
            FileError::Io(e) => e.fmt(f),
        }
    }
}

/// What kind of node `file_type` is, in words, when not a regular file.
pub fn kind_of(file_type: std::fs::FileType) -> Option<&'static str> {
    if file_type.is_file() {
        None
    } else if file_type.is_dir() {
        Some("a directory")
    } else if file_type.is_fifo() {
        Some("a FIFO")
    } else if file_type.is_char_device() {
        Some("a character device")
    } else if file_type.is_block_device() {
        Some("a block device")
    } else if file_type.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}

/// The regular file at `path` (symlinks followed), open for reading, when it is no
/// larger than `cap`: nothing is read yet.
fn open(path: &Path, cap: u64) -> Result<(std::fs::File, u64), FileError> {
    // O_NONBLOCK: opening a FIFO for reading would wait for a writer; a regular
    // file's reads are not affected by it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => FileError::NotFound,
            _ => FileError::Io(e),
        })?;
    let meta = file.metadata().map_err(FileError::Io)?;
    if let Some(kind) = kind_of(meta.file_type()) {
        return Err(FileError::NotRegular(kind));
    }
    if meta.len() > cap {
        return Err(FileError::TooLarge(cap));
    }
    Ok((file, meta.len()))
}

/// Whether [`read`] would take the file at `path`, without reading it: a check at
/// start for a file read later.
pub fn check(path: &Path, cap: u64) -> Result<(), FileError> {
    open(path, cap).map(drop)
}

/// The bytes of the regular file at `path` (symlinks followed), at most `cap`.
pub fn read(path: &Path, cap: u64) -> Result<Vec<u8>, FileError> {
    let (file, len) = open(path, cap)?;
    let mut bytes = Vec::with_capacity(len as usize);
    // A file that grows while read stops at the cap all the same.
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(FileError::Io)?;
    if bytes.len() as u64 > cap {
        return Err(FileError::TooLarge(cap));
    }
    Ok(bytes)
}

/// [`read`] as UTF-8 text.
pub fn read_text(path: &Path, cap: u64) -> Result<String, FileError> {
    String::from_utf8(read(path, cap)?).map_err(|_| {
        FileError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })
}

/// Where a file backend writes: standard output (`-`), or a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Path(std::path::PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_cap_are_read() {
        let dir = std::env::temp_dir().join(format!("msgx-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(read_text(&link, 100).unwrap(), "s3cret\n");
        assert!(matches!(read(&file, 3), Err(FileError::TooLarge(3))));
        assert!(check(&file, 100).is_ok());
        assert!(matches!(check(&file, 3), Err(FileError::TooLarge(3))));
        assert!(matches!(
            read(Path::new("/dev/zero"), 100),
            Err(FileError::NotRegular("a character device"))
        ));
        assert!(matches!(
            read(&dir, 100),
            Err(FileError::NotRegular("a directory"))
        ));
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read(&fifo, 100),
            Err(FileError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            read(&dir.join("none"), 100),
            Err(FileError::NotFound)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
