//! Reading the config file: a regular file of bounded size, UTF-8, read in one go.
//!
//! Anything else is refused at once with an error naming the path: a FIFO would block the
//! reader forever (opened non-blocking, it is never waited on), `/dev/zero` would grow it
//! without bound, a directory is a mistake in `--config`. The cap is far above any real
//! `alive.yaml` (the seed is a few KiB) and keeps a bad path from costing more memory than
//! the parse of a legitimate file.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::LoadError;

/// Largest config file accepted, in bytes.
pub const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// What a non-regular file is, for the error message; `None` for a regular file.
fn not_regular(meta: &Metadata) -> Option<&'static str> {
    let kind = meta.file_type();
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("directory")
    } else if kind.is_fifo() {
        Some("FIFO (named pipe)")
    } else if kind.is_char_device() {
        Some("character device")
    } else if kind.is_block_device() {
        Some("block device")
    } else if kind.is_socket() {
        Some("socket")
    } else {
        Some("special file")
    }
}

/// The text of the config file at `path` (symlinks followed, as a ConfigMap mount needs).
pub fn read_config(path: &Path) -> Result<String, LoadError> {
    let read_error = |error| LoadError::Read {
        path: path.to_owned(),
        error,
    };
    let check = |meta: &Metadata| -> Result<(), LoadError> {
        if let Some(kind) = not_regular(meta) {
            return Err(LoadError::NotRegular {
                path: path.to_owned(),
                kind,
            });
        }
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(LoadError::TooLarge {
                path: path.to_owned(),
                limit: MAX_CONFIG_BYTES,
            });
        }
        Ok(())
    };
    // Checked before opening (opening a socket fails, a FIFO would wait for a writer) and
    // again on the opened file, which may not be the one stat saw.
    check(&std::fs::metadata(path).map_err(read_error)?)?;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(read_error)?;
    check(&file.metadata().map_err(read_error)?)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_owned(),
            limit: MAX_CONFIG_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|e| LoadError::NotText {
        path: path.to_owned(),
        offset: e.utf8_error().valid_up_to(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(result: Result<String, LoadError>) -> String {
        match result {
            Ok(_) => panic!("read succeeded"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn a_directory_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = message(read_config(dir.path()));
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains("directory, not a regular file"), "{text}");
    }

    #[test]
    fn dev_zero_is_refused_as_a_character_device() {
        let text = message(read_config(Path::new("/dev/zero")));
        assert!(text.contains("/dev/zero is a character device"), "{text}");
    }

    #[test]
    fn a_file_over_the_cap_is_refused_with_the_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.yaml");
        let file = File::create(&path).expect("create");
        file.set_len(MAX_CONFIG_BYTES + 1).expect("set_len");
        let text = message(read_config(&path));
        assert!(
            text.contains(&format!("{MAX_CONFIG_BYTES} bytes")),
            "{text}"
        );
    }

    #[test]
    fn invalid_utf8_names_the_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bin.yaml");
        std::fs::write(&path, b"instances:\xff").expect("write");
        let text = message(read_config(&path));
        assert!(
            text.contains("not UTF-8 text") && text.contains("10"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_file_says_so_once() {
        let text = message(read_config(Path::new("/nonexistent/alive.yaml")));
        assert_eq!(
            text.matches("No such file or directory").count(),
            1,
            "{text}"
        );
    }
}
