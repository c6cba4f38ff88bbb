//! Generates the tonic/prost code from proto/*.proto with a vendored protoc (no system
//! package needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/master.proto", "proto/raft.proto", "proto/volume.proto", "proto/frontend.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
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
        &protos,
        &["proto"],
    )?;
    Ok(())
}
