fn main() {
    gst_plugin_version_helper::info();
    // Needs protoc (Debian: protobuf-compiler; scripts/setup.sh installs it).
    tonic_prost_build::compile_protos("proto/kserve_v2.proto")
        .expect("proto/kserve_v2.proto compiles with protoc");
}
