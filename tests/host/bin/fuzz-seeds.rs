// SPDX-License-Identifier: GPL-2.0

//! Writes the seed inputs of the fuzz targets (see `seeds.rs`), made from real streams:
//!
//! ```text
//! fuzz-seeds DECODE_DIR ROUNDTRIP_DIR
//! ```
//!
//! Each seed is a file `seed-NAME`; existing files of that name are replaced, others are left
//! alone (the corpus the fuzzer grew). Prints the number of seeds written to each directory.

use std::{
    fs,
    io,
    path::PathBuf,
    process::ExitCode, //
};

use qvp_stream::seeds;

/// Writes seed files into a directory and remembers the first error.
struct Writer {
    /// The corpus directory.
    dir: PathBuf,
    /// Number of seeds written.
    count: usize,
    /// The first error.
    result: io::Result<()>,
}

impl Writer {
    /// Creates `dir` if needed and a writer into it.
    fn new(dir: &str) -> Self {
        let dir = PathBuf::from(dir);
        let result = fs::create_dir_all(&dir);
        Self {
            dir,
            count: 0,
            result,
        }
    }

    /// Writes the seed `name`.
    fn put(&mut self, name: &str, bytes: &[u8]) {
        if self.result.is_ok() {
            self.result = fs::write(self.dir.join(format!("seed-{name}")), bytes);
            self.count += 1;
        }
    }

    /// Reports what was written.
    fn report(self) -> bool {
        match self.result {
            Ok(()) => {
                println!("{} seeds in {}", self.count, self.dir.display());
                true
            }
            Err(e) => {
                eprintln!("fuzz-seeds: {}: {e}", self.dir.display());
                false
            }
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, decode, roundtrip] = &args[..] else {
        eprintln!("usage: fuzz-seeds DECODE_DIR ROUNDTRIP_DIR");
        return ExitCode::from(2);
    };
    let mut d = Writer::new(decode);
    seeds::decode(|name, bytes| d.put(name, bytes));
    let mut r = Writer::new(roundtrip);
    seeds::roundtrip(|name, bytes| r.put(name, bytes));
    if d.report() & r.report() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
