//! Input as users have it: Parquet written by pyarrow, polars and DuckDB.

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

/// Datasets and embedding stores as pyarrow, polars and DuckDB write them
/// (`tests/fixtures/tools/`, `scripts/tool_fixtures.py`): each dataset is checked and
/// embedded, then each tool's store files (fixed-size lists with a `uint64` hash; plain
/// lists with a signed hash) stand in for the store and are reused row for row: the run
/// emits their vectors, and writes the store back in freshen's own layout.
#[test]
fn tables_and_stores_written_by_pyarrow_polars_and_duckdb_read() {
    let expected: Vec<(String, u64, Vec<u32>)> = (0..6)
        .map(|r| {
            let texts = ["banks", "water", "walls", "roads", "lamps", "winter"];
            let text = format!("document number {r} about {}", texts[r]);
            let v = (0..16)
                .map(|k| (r as f64 + k as f64 / 100.0) as f32)
                .map(f32::to_bits)
                .collect();
            (
                format!("d{r}"),
                freshen_operators::hashing::text_hash(&text),
                v,
            )
        })
        .collect();
    for tool in ["duckdb", "polars", "pyarrow"] {
        let fixture = root().join("tests/fixtures/tools").join(tool);
        let tmp = tempfile::tempdir().unwrap();
        let yaml = tmp.path().join("p.yaml");
        std::fs::write(&yaml, pipeline(&fixture.join("data"), tmp.path())).unwrap();
        let yaml = yaml.display().to_string();
        for cmd in ["check", "run"] {
            let o = freshen(&[cmd, &yaml]);
            assert!(o.status.success(), "{tool}: {cmd}: {:?}", text(&o));
        }
        let out = tmp.path().join("out/emb.parquet");
        assert_eq!(read_embeddings(&out).len(), 6, "{tool}");
        let store = store_file(&tmp.path().join("cache"));
        for layout in ["fixed", "list"] {
            let written = fixture.join("store").join(format!("{layout}.parquet"));
            std::fs::copy(&written, &store).unwrap();
            let o = freshen(&["run", &yaml]);
            assert!(o.status.success(), "{tool} {layout}: {:?}", text(&o));
            assert_eq!(read_embeddings(&out), expected, "{tool} {layout}: reused");
            assert_eq!(read_embeddings(&store), expected, "{tool} {layout}: store");
        }
    }
}
