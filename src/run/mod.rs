//! Running built images: [`qemu`] boots one image in one firmware mode
//! (`imgbuild boot`), [`test`](mod@test) boots every output of a build directory in
//! every mode its manifest records and checks each serial console
//! (`imgbuild test`).

pub mod qemu;
pub mod test;
