//! A pool of worker threads that maps jobs to results and hands the results
//! back in submission order, with a bounded number of jobs in flight.
//!
//! ```text
//! submit(job 0, 1, 2 …) ─► sync channel ─► worker 0..n (state per thread) ─► results
//!                                     each(result) in order ◄─ reordered by sequence
//! ```
//!
//! The order of the results never depends on the number of threads or on
//! timing, so a writer that places results as they come out writes the same
//! bytes with 1 thread or 64. Memory is bounded: at most `2 * threads + 1`
//! jobs (and their results) exist at once.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::{Error, Result};

/// The threads to use: `requested`, or the machine's parallelism. 0 is refused.
pub fn threads(requested: Option<usize>) -> Result<usize> {
    match requested {
        Some(0) => Err(Error::InvalidOption {
            option: "threads",
            detail: "0 threads cannot compress".into(),
        }),
        Some(n) => Ok(n),
        None => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

/// Ordered worker pool; see the module doc.
pub struct OrderedPool<J, R> {
    jobs: Option<SyncSender<(u64, J)>>,
    results: Receiver<(u64, R)>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_out: u64,
    pending: BTreeMap<u64, R>,
    max_in_flight: u64,
    /// What the workers do, for errors.
    what: &'static str,
}

impl<J: Send + 'static, R: Send + 'static> OrderedPool<J, R> {
    /// Starts `threads` workers named `name-<i>`. Each makes its state with
    /// `state` once, then runs `work` on every job it takes. `what` names
    /// the work in errors ("compressing VMDK grains").
    pub fn start<S, M, F>(
        name: &str,
        what: &'static str,
        threads: usize,
        state: M,
        work: F,
    ) -> Result<Self>
    where
        M: Fn() -> S + Send + Sync + 'static,
        F: Fn(&mut S, J) -> R + Send + Sync + 'static,
    {
        let threads = threads.max(1);
        let (job_tx, job_rx) = mpsc::sync_channel::<(u64, J)>(threads);
        let (res_tx, results) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let shared = Arc::new((state, work));
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let (rx, tx, shared) = (job_rx.clone(), res_tx.clone(), shared.clone());
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    let (state, work) = &*shared;
                    let mut s = state();
                    // A poisoned lock or a closed channel ends the worker.
                    while let Some((seq, job)) = rx.lock().ok().and_then(|rx| rx.recv().ok()) {
                        if tx.send((seq, work(&mut s, job))).is_err() {
                            return;
                        }
                    }
                })
                .map_err(|e| Error::io(format!("starting a thread for {what}"), e))?;
            workers.push(handle);
        }
        Ok(Self {
            jobs: Some(job_tx),
            results,
            workers,
            next_seq: 0,
            next_out: 0,
            pending: BTreeMap::new(),
            max_in_flight: threads as u64 * 2 + 1,
            what,
        })
    }

    /// Queues `job`. Results already done are handed to `each` first, in
    /// order; while the pool holds its maximum of jobs, this waits for the
    /// next result and hands it over.
    pub fn submit(&mut self, job: J, each: &mut dyn FnMut(R) -> Result<()>) -> Result<()> {
        self.drain_ready(each)?;
        while self.next_seq - self.next_out >= self.max_in_flight {
            self.receive()?;
            self.drain_ready(each)?;
        }
        let tx = self.jobs.as_ref().ok_or_else(|| self.died())?;
        tx.send((self.next_seq, job)).map_err(|_| self.died())?;
        self.next_seq += 1;
        Ok(())
    }

    /// Waits for every job, hands the remaining results to `each` in order,
    /// and stops the workers.
    pub fn finish(mut self, each: &mut dyn FnMut(R) -> Result<()>) -> Result<()> {
        self.jobs = None;
        self.drain_ready(each)?;
        while self.next_out < self.next_seq {
            self.receive()?;
            self.drain_ready(each)?;
        }
        for w in std::mem::take(&mut self.workers) {
            w.join().map_err(|_| self.died())?;
        }
        Ok(())
    }

    /// Hands over, in order, every result whose predecessors are all done.
    fn drain_ready(&mut self, each: &mut dyn FnMut(R) -> Result<()>) -> Result<()> {
        // Workers gone with results missing: `receive` reports it when the
        // caller waits for one.
        while let Ok((seq, r)) = self.results.try_recv() {
            self.pending.insert(seq, r);
        }
        while let Some(r) = self.pending.remove(&self.next_out) {
            self.next_out += 1;
            each(r)?;
        }
        Ok(())
    }

    fn receive(&mut self) -> Result<()> {
        let (seq, r) = self.results.recv().map_err(|_| self.died())?;
        self.pending.insert(seq, r);
        Ok(())
    }

    fn died(&self) -> Error {
        Error::io(self.what, std::io::Error::other("a worker thread stopped"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_submission_order_whatever_the_threads() {
        for threads in [1, 2, 5] {
            let mut pool = OrderedPool::start(
                "t",
                "testing",
                threads,
                || 0u64,
                |calls, n: u64| {
                    *calls += 1;
                    // Uneven work, so later jobs often finish first.
                    std::thread::sleep(std::time::Duration::from_micros((n * 7919) % 300));
                    n * 2
                },
            )
            .unwrap();
            let mut out = Vec::new();
            for n in 0..40 {
                pool.submit(n, &mut |r| {
                    out.push(r);
                    Ok(())
                })
                .unwrap();
            }
            pool.finish(&mut |r| {
                out.push(r);
                Ok(())
            })
            .unwrap();
            assert_eq!(
                out,
                (0..40).map(|n| n * 2).collect::<Vec<_>>(),
                "{threads} threads"
            );
        }
    }

    #[test]
    fn zero_threads_is_refused() {
        assert!(threads(Some(0)).is_err());
        assert_eq!(threads(Some(3)).unwrap(), 3);
    }
}
