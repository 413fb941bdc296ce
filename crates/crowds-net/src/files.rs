//! Files holding secrets and keys: created 0600, atomically, and checked when read.
//!
//! Owns the on-disk form of identity keys (PKCS#8 DER), public keys (hex text) and the
//! rule that a password file must not be readable by group or others. It never logs
//! file contents.

use crate::error::NodeError;
use crate::safelog::Secret;
use crowds_proto::identity::{PublicKey, SecretKey};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// File name of a jondo's identity key and the blender's signing key in their data dirs.
pub const IDENTITY_FILE: &str = "identity.key";
/// File name of the blender's published public key.
pub const BLENDER_PUB_FILE: &str = "blender.pub";

/// Creates `dir` (mode 0700) and its parents if missing.
pub fn ensure_private_dir(dir: &Path) -> Result<(), NodeError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| NodeError::io(format!("cannot create data directory {}", dir.display()), e))
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename) with `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), NodeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        NodeError::io(format!("cannot write {}", path.display()), e)
    })
}

/// Loads the Ed25519 key in `dir/identity.key`, creating it (mode 0600) if missing.
pub fn load_or_create_identity(dir: &Path) -> Result<SecretKey, NodeError> {
    ensure_private_dir(dir)?;
    let path = dir.join(IDENTITY_FILE);
    if path.exists() {
        check_private(&path)?;
        let der = fs::read(&path)
            .map_err(|e| NodeError::io(format!("cannot read {}", path.display()), e))?;
        return SecretKey::from_pkcs8(&der)
            .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())));
    }
    let key = SecretKey::generate().map_err(|e| NodeError::Config(e.to_string()))?;
    write_atomic(&path, key.pkcs8(), 0o600)?;
    Ok(key)
}

/// Reads a public key file (64 hex digits).
pub fn read_public_key(path: &Path) -> Result<PublicKey, NodeError> {
    let text = fs::read_to_string(path)
        .map_err(|e| NodeError::io(format!("cannot read key file {}", path.display()), e))?;
    PublicKey::from_hex(&text).map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))
}

/// Refuses files that group or others may read or write.
pub fn check_private(path: &Path) -> Result<(), NodeError> {
    let meta = fs::metadata(path)
        .map_err(|e| NodeError::io(format!("cannot read {}", path.display()), e))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(NodeError::Config(format!(
            "{} is accessible by group or others (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    Ok(())
}

/// Reads the first line of a password file that only its owner can read.
pub fn read_password_file(path: &Path) -> Result<Secret, NodeError> {
    check_private(path)?;
    let text =
        zeroize::Zeroizing::new(fs::read_to_string(path).map_err(|e| {
            NodeError::io(format!("cannot read password file {}", path.display()), e)
        })?);
    let line = Secret::new(text.lines().next().unwrap_or("").to_string());
    if line.expose().is_empty() {
        return Err(NodeError::Config(format!(
            "password file {} is empty",
            path.display()
        )));
    }
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_private_and_reused() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = load_or_create_identity(dir.path()).expect("create");
        let mode = fs::metadata(dir.path().join(IDENTITY_FILE))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create_identity(dir.path()).expect("reload");
        assert_eq!(a.public(), b.public());
    }

    #[test]
    fn readable_password_file_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("pw");
        fs::write(&p, "secret\n").expect("write");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_password_file(&p).expect_err("must refuse");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_password_file(&p).expect("ok").expose(), "secret");
    }
}
