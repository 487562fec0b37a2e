// sqlx::migrate! embeds the migrations at compile time but cannot see a new file: rebuild
// when the folder changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
