//! The cluster cookie: a shared secret read from a file (never from argv, where every
//! user on the host can read it).

use std::path::Path;

use crate::ClusterError;

/// Longest cookie accepted.
const MAX_COOKIE: usize = 4096;

/// Read the cookie in `path`: its content with surrounding whitespace trimmed.
///
/// # Errors
/// [`ClusterError::Cookie`] if it cannot be read, is empty or too long, or (on Unix) is
/// readable or writable by group or others.
pub fn read_cookie(path: &Path) -> Result<String, ClusterError> {
    let fail = |why: String| ClusterError::Cookie {
        path: path.display().to_string(),
        why,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "mode {:o} lets others read it (expected 600 or stricter: chmod 600)",
                mode & 0o777
            )));
        }
    }
    if meta.len() > MAX_COOKIE as u64 {
        return Err(fail(format!("longer than {MAX_COOKIE} bytes")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let cookie = text.trim();
    if cookie.is_empty() {
        return Err(fail("empty (expected a shared secret)".into()));
    }
    Ok(cookie.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join("cookie");
        std::fs::write(&path, text).expect("written");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn a_private_cookie_file_is_read_without_its_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write(dir.path(), "s3cret\n", 0o600);
        assert_eq!(read_cookie(&path).expect("read"), "s3cret");
    }

    #[test]
    fn a_cookie_others_can_read_or_an_empty_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = write(dir.path(), "s3cret", 0o644);
        assert!(read_cookie(&open).is_err_and(|e| e.to_string().contains("chmod 600")));
        let empty = write(dir.path(), " \n", 0o600);
        assert!(read_cookie(&empty).is_err_and(|e| e.to_string().contains("empty")));
        assert!(read_cookie(&dir.path().join("missing")).is_err());
    }
}
