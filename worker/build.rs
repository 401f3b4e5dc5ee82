//! Embeds both stores' SQL migrations (`../migrations/{postgres,sqlite}/*.sql`), as `sqlx::migrate!` would: that
//! macro needs sqlx's `macros` feature, which compiles sqlx's database drivers, rustls and tokio a second time
//! for the compiler's own use. `store::migrations` turns the files into sqlx migrations, with sqlx's checksums.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
    let mut code = String::new();
    for store in ["postgres", "sqlite"] {
        let dir = root.join(store);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("a readable directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
            .collect();
        files.sort();
        writeln!(
            code,
            "pub const {}: &[(&str, &str)] = &[",
            store.to_uppercase()
        )
        .unwrap();
        for path in files {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("UTF-8 file names");
            let path = path.canonicalize().expect("an existing file");
            writeln!(
                code,
                "    ({name:?}, include_str!({:?})),",
                path.display().to_string()
            )
            .unwrap();
        }
        code.push_str("];\n");
    }
    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    std::fs::write(out, code).expect("can write the embedded migrations");
}
