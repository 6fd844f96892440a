//! Generates the Rust types and tonic services from `proto/`. protoc comes from the
//! `protoc-bin-vendored` crate unless `PROTOC` is set, so a fresh machine needs no system protoc.
//! The guest wire (`guest.proto`, messages only) is always built; the cluster's services and
//! messages only with the `cluster` feature, together with their canonical JSON form (pbjson:
//! the proto3 JSON mapping, proto field names kept) for the REST API and the descriptor set the
//! API's OpenAPI schemas are generated from.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure().build_server(false).build_client(false).compile_protos(&["proto/presage/v1/guest.proto"], &["proto"])?;
    #[cfg(feature = "cluster")]
    cluster()?;
    Ok(())
}

#[cfg(feature = "cluster")]
fn cluster() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out.join("presage_descriptors.bin");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .file_descriptor_set_path(&descriptors)
        .extern_path(".presage.guest.v1", "crate::guest_pb")
        .compile_protos(&["proto/presage/v1/presage.proto", "proto/presage/v1/libvirt_driver.proto"], &["proto"])?;
    let set = std::fs::read(&descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&set)?
        .preserve_proto_field_names()
        .emit_fields()
        .build(&[".presage.v1", ".presage.guest.v1"])?;
    Ok(())
}
