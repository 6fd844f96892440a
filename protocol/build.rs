//! Generates the Rust types and tonic services from `proto/`. protoc comes from the
//! `protoc-bin-vendored` crate unless `PROTOC` is set, so a fresh machine needs no system protoc.
//! The guest wire (`guest.proto`, messages only) is always built; the cluster's services and
//! messages only with the `cluster` feature.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().build_server(false).build_client(false).compile_protos(&["proto/presage/v1/guest.proto"], &["proto"])?;
    if std::env::var_os("CARGO_FEATURE_CLUSTER").is_some() {
        tonic_prost_build::configure()
            .build_server(true)
            .build_client(true)
            .extern_path(".presage.guest.v1", "crate::guest_pb")
            .compile_protos(&["proto/presage/v1/presage.proto", "proto/presage/v1/libvirt_driver.proto"], &["proto"])?;
    }
    Ok(())
}
