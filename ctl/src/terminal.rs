//! What presagectl does differently on a terminal: colour (only there, unless asked; never
//! with `NO_COLOR` set or `TERM=dumb`), and `--watch`, which redraws a view in place.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static COLOUR: AtomicBool = AtomicBool::new(false);

/// `--color`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColourChoice {
    /// On a terminal, unless NO_COLOR is set or TERM is dumb.
    #[default]
    Auto,
    Always,
    Never,
}

/// Whether `choice` means colour, for an output that is (or not) a terminal, with the
/// environment's `NO_COLOR` and `TERM`.
pub fn wants_colour(choice: ColourChoice, is_terminal: bool, no_colour: bool, term: Option<&str>) -> bool {
    match choice {
        ColourChoice::Always => true,
        ColourChoice::Never => false,
        ColourChoice::Auto => is_terminal && !no_colour && term != Some("dumb"),
    }
}

/// Sets colour for this process's standard output.
pub fn set_colour(choice: ColourChoice) {
    let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let term = std::env::var("TERM").ok();
    COLOUR.store(wants_colour(choice, std::io::stdout().is_terminal(), no_colour, term.as_deref()), Ordering::Relaxed);
}

/// How a word reads: fine, worth a look, wrong, or beside the point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Good,
    Warn,
    Bad,
    Dim,
}

/// `text` in `tone`'s colour when colour is on; as it is otherwise (pad before painting: the
/// escape codes have no width).
pub fn paint(text: &str, tone: Tone) -> String {
    if !COLOUR.load(Ordering::Relaxed) {
        return text.to_string();
    }
    let code = match tone {
        Tone::Good => "32",
        Tone::Warn => "33",
        Tone::Bad => "31",
        Tone::Dim => "2",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// The tone of a plan's or a move's state word.
pub fn tone_of(state: &str) -> Tone {
    match state {
        "done" | "ok" | "reachable" | "Compliant" | "applied" | "finished" => Tone::Good,
        "failed" | "rolled_back" | "unreachable" | "NonCompliant" | "aborted" | "cancelled" => Tone::Bad,
        "planned" | "skipped" => Tone::Dim,
        _ => Tone::Warn,
    }
}

/// `--watch`: draws `view` every `every` until interrupted (Ctrl-C), in place on a terminal
/// (the screen cleared first), one after another otherwise (a log, or JSON lines).
pub async fn watch<F, Fut>(every: Duration, mut view: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let in_place = std::io::stdout().is_terminal();
    loop {
        let text = view().await?;
        if in_place {
            print!("\x1b[2J\x1b[H");
        }
        print!("{text}");
        if in_place {
            println!("{}", paint(&format!("every {}; Ctrl-C to stop", humantime::format_duration(every)), Tone::Dim));
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_unless_asked() {
        assert!(wants_colour(ColourChoice::Auto, true, false, Some("xterm-256color")));
        assert!(!wants_colour(ColourChoice::Auto, false, false, Some("xterm")), "a pipe or a file gets no escape codes");
        assert!(!wants_colour(ColourChoice::Auto, true, true, Some("xterm")), "NO_COLOR");
        assert!(!wants_colour(ColourChoice::Auto, true, false, Some("dumb")));
        assert!(wants_colour(ColourChoice::Always, false, true, None));
        assert!(!wants_colour(ColourChoice::Never, true, false, None));
    }
}
