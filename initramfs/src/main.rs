//! `rescue-init`: PID 1 of the live system, and (by the name it is called
//! under) the `poweroff`, `reboot`, `halt`, `modprobe` and `sync` commands of
//! the image.

use rescue_init::Power;

fn main() {
    let argv0 = std::env::args().next().unwrap_or_default();
    let name = argv0.rsplit('/').next().unwrap_or_default();
    let how = match name {
        "poweroff" => Some(Power::Off),
        "reboot" => Some(Power::Reboot),
        "halt" => Some(Power::Halt),
        "modprobe" => std::process::exit(rescue_init::modprobe(
            &std::env::args().skip(1).collect::<Vec<_>>(),
        )),
        "sync" => {
            rescue_init::sync();
            return;
        }
        _ => None,
    };
    if let Some(how) = how {
        if let Err(e) = rescue_init::request(how) {
            eprintln!("{name}: asking init (PID 1) to stop the machine: {e}");
            std::process::exit(1);
        }
        return;
    }
    if std::process::id() == 1 {
        rescue_init::run_pid1();
    }
    eprintln!(
        "rescue-init is the live system's PID 1 (the kernel starts it as /init); \
         run as poweroff, reboot, halt or sync it asks PID 1 to act"
    );
    std::process::exit(2);
}
