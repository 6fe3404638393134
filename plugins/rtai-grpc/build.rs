fn main() {
    gst_plugin_version_helper::info();
    // Needs protoc (Debian: protobuf-compiler; scripts/setup.sh installs it).
    tonic_prost_build::compile_protos("proto/rtai_stream.proto")
        .expect("proto/rtai_stream.proto compiles with protoc");
}
