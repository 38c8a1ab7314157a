//! Progress bars on stderr: one total bar plus one bar per file being transferred (indicatif
//! hides them all when stderr is not a terminal; `HubOptions::progress = false` never draws).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(crate) struct Progress {
    multi: Option<MultiProgress>,
    total: ProgressBar,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Progress {
    pub(crate) fn new(enabled: bool, repo: &str, files: usize, total_bytes: u64) -> Self {
        if !enabled {
            return Progress {
                multi: None,
                total: ProgressBar::hidden(),
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total = multi.add(
            ProgressBar::new(total_bytes)
                .with_style(style(
                    "{bytes:>10}/{total_bytes:<10} [{bar:25}] {binary_bytes_per_sec:>12} eta {eta:>4} {wide_msg}",
                ))
                .with_message(format!("{repo}: {files} files")),
        );
        Progress {
            multi: Some(multi),
            total,
        }
    }

    /// A bar for one file being transferred.
    pub(crate) fn file(&self, name: &str, size: Option<u64>) -> FileBar {
        let bar = match &self.multi {
            None => ProgressBar::hidden(),
            Some(multi) => {
                let bar = ProgressBar::new(size.unwrap_or(0))
                    .with_style(style(
                        "{bytes:>10}/{total_bytes:<10} [{bar:25}] {binary_bytes_per_sec:>12}          {wide_msg}",
                    ))
                    .with_message(name.to_string());
                multi.add(bar)
            }
        };
        FileBar {
            bar,
            total: self.total.clone(),
        }
    }

    /// A file that was already complete in the cache.
    pub(crate) fn skip(&self, bytes: u64) {
        self.total.inc(bytes);
    }

    pub(crate) fn finish(&self) {
        self.total.finish_and_clear();
    }
}

pub(crate) struct FileBar {
    bar: ProgressBar,
    total: ProgressBar,
}

impl FileBar {
    pub(crate) fn inc(&self, bytes: u64) {
        self.bar.inc(bytes);
        self.total.inc(bytes);
    }

    /// The transfer starts over from byte 0.
    pub(crate) fn reset(&self) {
        self.total.dec(self.bar.position());
        self.bar.set_position(0);
    }
}

impl Drop for FileBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
