//! Which files make up a binlog: the index file names them in order, across rotations.

use super::scan::written_before;
use multiaz_engine::GtidSet;
use std::path::{Path, PathBuf};

/// The binlog files named by the index, oldest first. Without `index`, the one
/// `*.index` file in `dir` (refused when there are none or several).
pub fn binlog_files(dir: &Path, index: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    let index = match index {
        Some(i) => i.to_path_buf(),
        None => find_index(dir)?,
    };
    let text = std::fs::read_to_string(&index)
        .map_err(|e| format!("cannot read binlog index {}: {e}", index.display()))?;
    let files: Vec<PathBuf> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            // The server writes names relative to its datadir ("./mysql-bin.000001"),
            // or absolute when it ran with an absolute --log-bin. An absolute path that
            // does not exist here is a dead server's disk mounted elsewhere: the file
            // is looked for in `dir`, where the index is.
            let p = Path::new(l);
            let here = dir.join(p.file_name().unwrap_or(p.as_os_str()));
            if p.is_absolute() && (p.exists() || !here.exists()) {
                p.to_path_buf()
            } else {
                here
            }
        })
        .collect();
    if files.is_empty() {
        return Err(format!("binlog index {} names no files", index.display()));
    }
    Ok(files)
}

fn find_index(dir: &Path) -> Result<PathBuf, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "index"))
        .filter(|p| !p.to_string_lossy().contains("relay"))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!(
            "no binlog index (*.index) in {}; name it with --index",
            dir.display()
        )),
        _ => Err(format!(
            "several binlog indexes in {} ({}); name one with --index",
            dir.display(),
            found
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The files to read for everything after `after`: from the newest file whose
/// "written before" set `after` already holds, so older files are not read at all.
pub fn files_after(files: &[PathBuf], after: Option<&GtidSet>) -> Vec<PathBuf> {
    let Some(after) = after else {
        return files.to_vec();
    };
    let start = (0..files.len())
        .rev()
        .find(|&i| written_before(&files[i]).is_some_and(|before| after.contains(&before)))
        .unwrap_or(0);
    files[start..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absolute_path_that_is_not_here_is_looked_for_beside_the_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mysql-bin.000001"), b"x").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("mysql-bin.000002"), b"x").unwrap();
        std::fs::write(
            dir.path().join("mysql-bin.index"),
            format!(
                "/var/lib/mysql-on-the-dead-host/mysql-bin.000001\n{}\n./mysql-bin.000003\n",
                elsewhere.path().join("mysql-bin.000002").display()
            ),
        )
        .unwrap();
        let files = binlog_files(dir.path(), None).unwrap();
        assert_eq!(
            files,
            [
                // Moved: found where the index is.
                dir.path().join("mysql-bin.000001"),
                // Still where the index says: taken from there.
                elsewhere.path().join("mysql-bin.000002"),
                // Relative: beside the index (missing: the reader reports it).
                dir.path().join("mysql-bin.000003"),
            ]
        );
    }
}
