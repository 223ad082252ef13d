//! Build script: nothing is compiled here (kernels are compiled by NVRTC at run time),
//! but the CUDA sources are embedded with include_str!, so rebuild when they change.
fn main() {
    println!("cargo:rerun-if-changed=kernels");
}
