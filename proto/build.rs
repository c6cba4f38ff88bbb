//! Generates the tonic/prost code from proto/*.proto with a vendored protoc (no system
//! package needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/common.proto",
        "proto/master.proto",
        "proto/raft.proto",
        "proto/volume.proto",
        "proto/frontend.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    // The shared types first, on their own (an extern path is not generated).
    let mut common = tonic_prost_build::Config::new();
    common.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(common, &[protos[0]], &["proto"])?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Shared types are generated once, in `crate::common`, and referred to from there.
    config.extern_path(".cellar.common.v1", "crate::common");
    // Block payloads are `bytes::Bytes`: decoded without a copy out of the receive buffer,
    // and shared (not cloned) when one payload goes to several replicas.
    config.bytes([
        ".cellar.volume.v1.BlockRecord.payload",
        ".cellar.volume.v1.ReadRecordResponse.payload",
        ".cellar.volume.v1.ReadFragmentResponse.data",
        ".cellar.frontend.v1.PutRequest.data",
        ".cellar.frontend.v1.GetResponse.data",
    ]);
    tonic_prost_build::configure().build_server(true).build_client(true).compile_with_config(
        config,
        &protos[1..],
        &["proto"],
    )?;
    Ok(())
}
