//! Files written owner-only (0600 on Unix) and atomically: a temporary file in the same directory, fsync,
//! then a link or rename into place, then fsync of the directory. A crash leaves the old file or the new one,
//! never half of one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

use crate::VaultError;

/// Writes `bytes` to `path`, which must not exist yet. The no-clobber check and the write are one atomic step
/// (a hard link fails if the name is taken), so two processes cannot both think they created the file.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let temp = Temp::write(path, bytes)?;
    fs::hard_link(&temp.path, path).map_err(|e| match e.kind() {
        io::ErrorKind::AlreadyExists => VaultError::AlreadyExists(path.to_path_buf()),
        _ => VaultError::io(path, e),
    })?;
    drop(temp);
    sync_dir(path)
}

/// Replaces `path` with `bytes` in one step; the caller has made sure replacing is what was asked.
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), VaultError> {
    let mut temp = Temp::write(path, bytes)?;
    fs::rename(&temp.path, path).map_err(|e| VaultError::io(path, e))?;
    temp.renamed = true;
    sync_dir(path)
}

/// Reads at most `limit` bytes; a longer file is refused rather than read.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, VaultError> {
    let file = File::open(path).map_err(|e| VaultError::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| VaultError::io(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(VaultError::Malformed(format!(
            "the file is larger than {limit} bytes"
        )));
    }
    Ok(bytes)
}

/// A temporary file beside the target, removed on drop unless it was renamed into place.
struct Temp {
    path: PathBuf,
    renamed: bool,
}

impl Temp {
    fn write(target: &Path, bytes: &[u8]) -> Result<Self, VaultError> {
        let name = target
            .file_name()
            .ok_or_else(|| VaultError::io(target, io::ErrorKind::InvalidInput.into()))?;
        let mut random = [0u8; 8];
        OsRng
            .try_fill_bytes(&mut random)
            .map_err(|_| VaultError::Random)?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.tmp", hex::encode(random)));
        let path = target.with_file_name(temp_name);

        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            // Set at creation, so the file is never readable by others, not even for an instant.
            options.mode(0o600);
        }
        let mut file = options.open(&path).map_err(|e| VaultError::io(&path, e))?;
        let temp = Self {
            path,
            renamed: false,
        };
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| VaultError::io(&temp.path, e))?;
        Ok(temp)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if !self.renamed {
            // Best effort; the file is owner-only, like the target it was meant to become.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Makes the new directory entry durable.
fn sync_dir(path: &Path) -> Result<(), VaultError> {
    #[cfg(unix)]
    {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| VaultError::io(dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}
