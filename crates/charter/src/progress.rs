//! Progress bars on stderr for long work (`eval`'s cases, `bench`'s load phases), drawn only
//! when stderr is a terminal, so logs and pipes get none of it.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

const WIDTH: usize = 30;

/// `[#####     ]`: `done` of `total`, `width` cells.
pub fn bar(done: f64, total: f64, width: usize) -> String {
    let fraction = if total > 0.0 {
        (done / total).clamp(0.0, 1.0)
    } else {
        1.0
    };
    // In 0..=width by the clamp above.
    let filled = ((fraction * width as f64).floor() as usize).min(width);
    format!("[{}{}]", "#".repeat(filled), " ".repeat(width - filled))
}

/// A count of items done, `[####   ] done/total`, redrawn in place.
pub struct Progress {
    total: usize,
    on: bool,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress {
            total,
            on: std::io::stderr().is_terminal() && total > 1,
        }
    }

    /// Whether the bar is drawn (a message printed meanwhile should start a new line).
    pub fn shown(&self) -> bool {
        self.on
    }

    pub fn tick(&self, done: usize) {
        if self.on {
            eprint!(
                "\r{} {done}/{}",
                bar(done as f64, self.total as f64, WIDTH),
                self.total
            );
            if done == self.total {
                eprintln!();
            }
        }
    }
}

/// A bar that fills over a stretch of wall time (a load phase of known length), redrawn
/// every 250 ms by a task that ends when the stretch is over or the bar is dropped.
pub struct Timed {
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Timed {
    pub fn start(label: String, length: Duration) -> Timed {
        if !std::io::stderr().is_terminal() {
            return Timed { task: None };
        }
        let started = Instant::now();
        let task = tokio::spawn(async move {
            loop {
                let elapsed = started.elapsed().min(length);
                eprint!(
                    "\r{} {:.1}s/{:.1}s {label}",
                    bar(elapsed.as_secs_f64(), length.as_secs_f64(), WIDTH),
                    elapsed.as_secs_f64(),
                    length.as_secs_f64()
                );
                if elapsed >= length {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Timed { task: Some(task) }
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            // Clear the line for what is printed next.
            eprint!("\r{}\r", " ".repeat(WIDTH + 60));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bar;

    #[test]
    fn bars_fill_in_proportion_and_stay_in_bounds() {
        assert_eq!(bar(0.0, 10.0, 10), "[          ]");
        assert_eq!(bar(5.0, 10.0, 10), "[#####     ]");
        assert_eq!(bar(10.0, 10.0, 10), "[##########]");
        assert_eq!(bar(15.0, 10.0, 10), "[##########]", "clamped when over");
        assert_eq!(bar(-1.0, 10.0, 10), "[          ]", "clamped when under");
        assert_eq!(bar(3.0, 0.0, 4), "[####]", "an empty total is done");
    }
}
