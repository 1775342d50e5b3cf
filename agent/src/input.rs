//! Reading the text files operators hand the agent (the config file, rule files) without
//! trusting what the path names: only a regular file is read (a FIFO would block the reader
//! until some writer came, a device such as `/dev/zero` would feed it forever), at most a given
//! number of bytes, and it must be UTF-8 (the first bad byte is named by line and column).

use std::{
    fs::{File, Metadata, OpenOptions},
    io::Read,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::Path,
};

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file but {0}")]
    NotRegular(&'static str),
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    #[error("not UTF-8: invalid byte at line {line}, column {column}")]
    NotUtf8 { line: usize, column: usize },
}

/// What a non-regular file is, for messages.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

/// Opens `path` (symlinks followed) without blocking, and only if it is a regular file.
fn open_regular(path: &Path) -> Result<(File, Metadata), ReadError> {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. It has no
    // effect on reads of a regular file, the only kind read below.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind(&meta)));
    }
    Ok((file, meta))
}

/// The bytes of the regular file at `path`, at most `max_bytes` of them (a file that grows
/// while it is read is cut there and refused too).
pub fn read_bytes(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ReadError> {
    let (file, meta) = open_regular(path)?;
    if meta.len() > max_bytes {
        return Err(ReadError::TooLarge(max_bytes));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ReadError::TooLarge(max_bytes));
    }
    Ok(bytes)
}

/// The text of the regular file at `path`, at most `max_bytes` long. See [`read_bytes`].
pub fn read_text(path: &Path, max_bytes: u64) -> Result<String, ReadError> {
    String::from_utf8(read_bytes(path, max_bytes)?).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        ReadError::NotUtf8 {
            line: good.iter().filter(|b| **b == b'\n').count() + 1,
            // `good` is valid UTF-8: its characters since the last newline
            column: String::from_utf8_lossy(&good[line_start..]).chars().count() + 1,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_of_bounded_size_and_utf8_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("ok.yaml"), "a: é\n").unwrap();
        assert_eq!(read_text(&p("ok.yaml"), 100).unwrap(), "a: é\n");
        std::fs::write(p("empty.yaml"), "").unwrap();
        assert_eq!(read_text(&p("empty.yaml"), 100).unwrap(), "");
        assert!(matches!(
            read_text(&p("ok.yaml"), 3),
            Err(ReadError::TooLarge(3))
        ));
        std::fs::write(p("bad.yaml"), b"a: 1\nb\xc3\xa9: \xff\n").unwrap();
        let e = read_text(&p("bad.yaml"), 100).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not UTF-8: invalid byte at line 2, column 5",
            "{e:?}"
        );
        std::fs::create_dir(p("dir.yaml")).unwrap();
        assert_eq!(
            read_text(&p("dir.yaml"), 100).unwrap_err().to_string(),
            "not a regular file but a directory"
        );
        // A FIFO without a writer: refused at once instead of blocking.
        let fifo = p("fifo.yaml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            read_text(&fifo, 100).unwrap_err().to_string(),
            "not a regular file but a FIFO"
        );
        assert_eq!(
            read_text(Path::new("/dev/zero"), 100)
                .unwrap_err()
                .to_string(),
            "not a regular file but a character device"
        );
        std::os::unix::fs::symlink(p("gone.yaml"), p("dangling.yaml")).unwrap();
        assert!(matches!(
            read_text(&p("dangling.yaml"), 100),
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound
        ));
    }
}
