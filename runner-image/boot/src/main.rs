//! The runner container's entrypoint; everything is in the library (`tasuki_runner_boot::run`).

fn main() {
    let code = tasuki_runner_boot::run(std::env::args_os().skip(1).collect());
    std::process::exit(code);
}
