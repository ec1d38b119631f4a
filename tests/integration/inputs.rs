//! Input as users have it: Parquet written by pyarrow and polars with every codec.

use crate::common::*;

/// Every fixture of `tests/fixtures/codecs/` (`scripts/codec_fixtures.py`: pyarrow and
/// polars, each with snappy, gzip, zstd, lz4 and brotli) is checked row by row and
/// embedded.
#[test]
fn parquet_of_every_codec_reads() {
    let fixtures = root().join("tests/fixtures/codecs");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let data = entry.unwrap().path();
        let name = data.file_name().unwrap().to_string_lossy().into_owned();
        let tmp = tempfile::tempdir().unwrap();
        let yaml = tmp.path().join("p.yaml");
        std::fs::write(&yaml, pipeline(&data, tmp.path())).unwrap();
        for cmd in ["check", "run"] {
            let o = freshen(&[cmd, &yaml.display().to_string()]);
            assert!(o.status.success(), "{name}: {cmd}: {:?}", text(&o));
        }
        let rows = read_embeddings(&tmp.path().join("out/emb.parquet"));
        assert_eq!(rows.len(), 6, "{name}");
        seen.push(name);
    }
    seen.sort();
    for writer in ["polars", "pyarrow"] {
        for codec in ["brotli", "gzip", "lz4", "snappy", "zstd"] {
            assert!(
                seen.contains(&format!("{writer}-{codec}")),
                "no fixture {writer}-{codec}"
            );
        }
    }
}
