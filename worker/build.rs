//! Re-embeds the migrations whenever `../migrations` changes (sqlx::migrate! alone misses new files).
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
