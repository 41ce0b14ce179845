//! Progress of a sweep: one bar for the sweep, one for the run in progress, and a log line per
//! finished run (printed even when stderr is not a terminal and the bars are hidden).

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// The bars of one sweep.
#[derive(Debug)]
pub struct SweepProgress {
    multi: MultiProgress,
    sweep: ProgressBar,
}

impl SweepProgress {
    /// A sweep of `runs` runs, labelled `label` on its bar.
    pub fn new(label: &str, runs: usize) -> Self {
        let multi = MultiProgress::new();
        let sweep = multi.add(ProgressBar::new(runs as u64));
        sweep.set_style(
            ProgressStyle::with_template(&format!(
                "{label} {{bar:30}} {{pos}}/{{len}} runs, {{elapsed}} elapsed, eta {{eta}}"
            ))
            .expect("valid template"),
        );
        Self { multi, sweep }
    }

    /// A bar for one run (length: its step budget), shown under the sweep bar; the trainer drives it.
    pub fn start_run(&self, id: String, max_steps: u64) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(max_steps));
        bar.set_prefix(id);
        bar
    }

    /// Removes the run's bar, logs `line` and advances the sweep bar.
    pub fn finish_run(&self, bar: &ProgressBar, line: String) {
        bar.finish_and_clear();
        self.multi.remove(bar);
        // A hidden MultiProgress (not a terminal) drops println: log lines must still appear.
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
        self.sweep.inc(1);
    }

    /// Clears the sweep bar.
    pub fn finish(&self) {
        self.sweep.finish_and_clear();
    }
}
