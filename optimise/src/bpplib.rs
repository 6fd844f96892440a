//! BPPLIB's bin-packing instance files: the number of items n, the bin capacity c, then n
//! lines of one integer weight each.

use std::path::{Path, PathBuf};

use presage_decide::optimise::binpacking::BinPacking;

#[derive(Debug, thiserror::Error)]
pub enum BpplibError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: line {line}: {why}")]
    Malformed { path: PathBuf, line: usize, why: String },
    #[error("{path} holds no .txt instance files")]
    Empty { path: PathBuf },
}

/// Parses one instance's text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<BinPacking, BpplibError> {
    let bad = |line: usize, why: String| BpplibError::Malformed { path: path.to_path_buf(), line, why };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty());
    let mut number = |what: &str| -> Result<(usize, u64), BpplibError> {
        let (line, l) = lines.next().ok_or_else(|| bad(0, format!("the file ends before {what}")))?;
        let v = l.parse::<u64>().map_err(|_| bad(line, format!("{what} {l:?} is not a whole number")))?;
        Ok((line, v))
    };
    let (nline, n) = number("the number of items")?;
    let (cline, capacity) = number("the capacity")?;
    if capacity == 0 {
        return Err(bad(cline, "the capacity is 0".into()));
    }
    if n == 0 || n > 10_000_000 {
        return Err(bad(nline, format!("{n} items (1..=10,000,000)")));
    }
    let mut weights = Vec::with_capacity(n as usize);
    for k in 0..n {
        let (line, w) = number(&format!("item {}", k + 1))?;
        if w == 0 || w > capacity {
            return Err(bad(line, format!("item {} weighs {w}, outside 1..={capacity}", k + 1)));
        }
        weights.push(w);
    }
    if let Some((line, l)) = lines.next() {
        return Err(bad(line, format!("{l:?} after the {n} items the file announces")));
    }
    Ok(BinPacking { capacity, weights })
}

/// One instance file.
pub fn read(path: &Path) -> Result<BinPacking, BpplibError> {
    let text = std::fs::read_to_string(path).map_err(|source| BpplibError::Read { path: path.to_path_buf(), source })?;
    parse(&text, path)
}

/// The instance files a path names: the file itself, or every `.txt` in the folder and its
/// subfolders, sorted.
pub fn instance_files(path: &Path) -> Result<Vec<PathBuf>, BpplibError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| BpplibError::Read { path: d.clone(), source })?;
        for e in entries {
            let p = e.map_err(|source| BpplibError::Read { path: d.clone(), source })?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "txt") {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(BpplibError::Empty { path: path.to_path_buf() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_reads_and_bad_ones_say_where() {
        let p = Path::new("x.txt");
        let ok = parse("3\n100\n50\n30\n\n20\n", p).unwrap();
        assert_eq!(ok, BinPacking { capacity: 100, weights: vec![50, 30, 20] });
        let e = parse("3\n100\n50\n30\n", p).unwrap_err().to_string();
        assert!(e.contains("ends before item 3"), "{e}");
        let e = parse("2\n100\n50\n101\n", p).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("outside 1..=100"), "{e}");
        let e = parse("2\nlots\n", p).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("capacity"), "{e}");
        let e = parse("1\n100\n5\n6\n", p).unwrap_err().to_string();
        assert!(e.contains("after the 1 items"), "{e}");
    }
}
