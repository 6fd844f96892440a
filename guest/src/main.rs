//! `presage-guest [--config PATH]`: see the library.

fn main() {
    let mut args = std::env::args().skip(1);
    let mut config = std::path::PathBuf::from("/etc/presage/guest.toml");
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => match args.next() {
                Some(p) => config = p.into(),
                None => fail("--config needs a path"),
            },
            "--version" => {
                println!("presage-guest {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            other => fail(&format!("unknown argument {other:?} (usage: presage-guest [--config PATH])")),
        }
    }
    let cfg = presage_guest::config::GuestConfig::load(&config).unwrap_or_else(|e| fail(&e.to_string()));
    if let Err(e) = presage_guest::run(cfg) {
        fail(&e);
    }
}

fn fail(why: &str) -> ! {
    eprintln!("presage-guest: {why}");
    std::process::exit(2)
}
