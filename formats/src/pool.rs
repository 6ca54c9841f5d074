//! The one pool of worker threads that every compressing writer uses (the
//! streamOptimized VMDK's grains, compressed qcow2 clusters, gzip blocks):
//! it maps jobs to results and hands the results back in submission order,
//! with a bounded number of jobs in flight.
//!
//! ```text
//! submit(job 0, 1, 2 …) ─► sync channel ─► worker 0..n (state per thread) ─► results
//!                                     each(result) in order ◄─ reordered by sequence
//! ```
//!
//! The order of the results never depends on the number of threads or on
//! timing, so a writer that places results as they come out writes the same
//! bytes with 1 thread or 64. Memory is bounded: at most `2 * threads + 1`
//! jobs (and their results) exist at once. The workers are joined when the
//! pool finishes, and also when it is dropped early (a writer that failed):
//! no thread outlives its pool. A worker that panics ends the pool with an
//! error instead of leaving the caller waiting for its result.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
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

/// A result, or the sign that the worker running the job panicked.
type Outcome<R> = std::thread::Result<R>;

/// Ordered worker pool; see the module doc.
pub struct OrderedPool<J, R> {
    jobs: Option<SyncSender<(u64, J)>>,
    results: Receiver<(u64, Outcome<R>)>,
    workers: Vec<JoinHandle<()>>,
    next_seq: u64,
    next_out: u64,
    pending: BTreeMap<u64, R>,
    max_in_flight: u64,
    /// What the workers do, for errors.
    what: &'static str,
}

impl<J: Send + 'static, R: Send + 'static> OrderedPool<J, R> {
    /// Starts `threads` workers named `name-<i>`. Each gets its own state,
    /// made here by `state` (so a failure to make one is this call's error),
    /// then runs `work` on every job it takes. `what` names the work in
    /// errors ("compressing VMDK grains").
    pub fn start<S, M, F>(
        name: &str,
        what: &'static str,
        threads: usize,
        mut state: M,
        work: F,
    ) -> Result<Self>
    where
        S: Send + 'static,
        M: FnMut() -> Result<S>,
        F: Fn(&mut S, J) -> R + Send + Sync + 'static,
    {
        let threads = threads.max(1);
        let (job_tx, job_rx) = mpsc::sync_channel::<(u64, J)>(threads);
        let (res_tx, results) = mpsc::channel();
        let mut pool = Self {
            jobs: Some(job_tx),
            results,
            workers: Vec::with_capacity(threads),
            next_seq: 0,
            next_out: 0,
            pending: BTreeMap::new(),
            max_in_flight: threads as u64 * 2 + 1,
            what,
        };
        let job_rx = Arc::new(Mutex::new(job_rx));
        let work = Arc::new(work);
        for i in 0..threads {
            // On an error here, dropping `pool` joins the workers started so far.
            let mut s = state()?;
            let (rx, tx, work) = (job_rx.clone(), res_tx.clone(), work.clone());
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    // A poisoned lock or a closed channel ends the worker.
                    while let Some((seq, job)) = rx.lock().ok().and_then(|rx| rx.recv().ok()) {
                        let outcome = catch_unwind(AssertUnwindSafe(|| work(&mut s, job)));
                        let panicked = outcome.is_err();
                        if tx.send((seq, outcome)).is_err() || panicked {
                            return;
                        }
                    }
                })
                .map_err(|e| Error::io(format!("starting a thread for {what}"), e))?;
            pool.workers.push(handle);
        }
        Ok(pool)
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
    /// and joins the workers.
    pub fn finish(mut self, each: &mut dyn FnMut(R) -> Result<()>) -> Result<()> {
        self.jobs = None;
        self.drain_ready(each)?;
        while self.next_out < self.next_seq {
            self.receive()?;
            self.drain_ready(each)?;
        }
        self.join()
    }

    /// Hands over, in order, every result whose predecessors are all done.
    fn drain_ready(&mut self, each: &mut dyn FnMut(R) -> Result<()>) -> Result<()> {
        // Workers gone with results missing: `receive` reports it when the
        // caller waits for one.
        while let Ok((seq, r)) = self.results.try_recv() {
            self.keep(seq, r)?;
        }
        while let Some(r) = self.pending.remove(&self.next_out) {
            self.next_out += 1;
            each(r)?;
        }
        Ok(())
    }

    fn receive(&mut self) -> Result<()> {
        let (seq, r) = self.results.recv().map_err(|_| self.died())?;
        self.keep(seq, r)
    }

    fn keep(&mut self, seq: u64, outcome: Outcome<R>) -> Result<()> {
        let r = outcome.map_err(|_| self.died())?;
        self.pending.insert(seq, r);
        Ok(())
    }

    /// Closes the queue and waits for every worker (each ends after its
    /// current job).
    fn join(&mut self) -> Result<()> {
        self.jobs = None;
        let mut ok = true;
        for w in std::mem::take(&mut self.workers) {
            ok &= w.join().is_ok();
        }
        if ok {
            Ok(())
        } else {
            Err(self.died())
        }
    }

    fn died(&self) -> Error {
        Error::io(self.what, std::io::Error::other("a worker thread stopped"))
    }
}

impl<J, R> Drop for OrderedPool<J, R> {
    fn drop(&mut self) {
        // Results go to an unbounded channel, so no worker waits on us: with
        // the queue closed, each ends after its current job.
        self.jobs = None;
        for w in std::mem::take(&mut self.workers) {
            let _ = w.join();
        }
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
                || Ok(0u64),
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

    #[test]
    fn a_failing_state_is_the_start_error() {
        let mut made = 0;
        let r = OrderedPool::<u32, u32>::start(
            "t",
            "testing",
            3,
            || {
                made += 1;
                if made == 2 {
                    Err(Error::io("making state", std::io::Error::other("no")))
                } else {
                    Ok(())
                }
            },
            |_, n| n,
        );
        assert!(r.is_err());
    }

    #[test]
    fn a_panicking_job_is_an_error_not_a_hang() {
        let mut pool = OrderedPool::start(
            "t",
            "testing",
            2,
            || Ok(()),
            |_, n: u32| {
                assert!(n != 3, "job 3 fails");
                n
            },
        )
        .unwrap();
        let mut r = Ok(());
        for n in 0..10 {
            r = r.and_then(|()| pool.submit(n, &mut |_| Ok(())));
        }
        let r = r.and_then(|()| pool.finish(&mut |_| Ok(())));
        assert!(r.is_err());
    }

    #[test]
    fn dropping_a_pool_joins_its_workers() {
        let alive = Arc::new(());
        let mut pool = OrderedPool::start(
            "t",
            "testing",
            3,
            {
                let alive = alive.clone();
                move || Ok(alive.clone())
            },
            |_, n: u32| n,
        )
        .unwrap();
        pool.submit(1, &mut |_| Ok(())).unwrap();
        assert_eq!(Arc::strong_count(&alive), 4);
        drop(pool);
        // Each worker's state went with its thread.
        assert_eq!(Arc::strong_count(&alive), 1);
    }
}
