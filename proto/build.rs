//! Generates the tonic/prost code from proto/*.proto with a vendored protoc (no system
//! package needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/master.proto", "proto/raft.proto", "proto/volume.proto", "proto/frontend.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().build_server(true).build_client(true).compile_with_config(
        config,
        &protos,
        &["proto"],
    )?;
    Ok(())
}
