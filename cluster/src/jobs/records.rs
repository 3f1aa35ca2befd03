//! Jobs as records on the root replicas: what any gateway reads to report
//! a job, and what a gateway taking a job over resumes from.
//!
//! A job is one [`JobRecord`] under `h(id)`; its tasks are
//! [`JobTaskRecord`]s under `h(id) ‖ h(input key)`, so one range scan
//! reads them all. Two more records sit in that range under short
//! suffixes no 32-byte name hash can take: the reduce task and a cancel
//! request (written by whichever gateway the user asked, read by the
//! driver). Only the driving gateway writes the job and its tasks.

use super::{
    JobPhase, JobSpec, JobStatus, Locality, Placement, ProgramFile, ProgramSpec, TaskLimits,
    TaskPhase, TaskStatus,
};
use crate::error::Result;
use crate::store::ObjectStore;
use grid::node_api::MetaOp;
use grid::table::Table;
pub use metadata::model::{JobProgram, JobRecord, JobTaskRecord};
use metadata::sealed::{NameKind, RecordKeys};

const REDUCE_SUFFIX: &[u8] = b"reduce";
const CANCEL_SUFFIX: &[u8] = b"cancel";

fn job_key(keys: &RecordKeys, id: &str) -> Vec<u8> {
    keys.name_hash(NameKind::Job, id.as_bytes()).to_vec()
}

fn task_key(keys: &RecordKeys, id: &str, input: &str) -> Vec<u8> {
    let mut k = job_key(keys, id);
    k.extend_from_slice(&keys.name_hash(NameKind::JobTask, input.as_bytes()));
    k
}

fn suffixed(keys: &RecordKeys, id: &str, suffix: &[u8]) -> Vec<u8> {
    let mut k = job_key(keys, id);
    k.extend_from_slice(suffix);
    k
}

fn program_record(p: &ProgramSpec) -> JobProgram {
    JobProgram {
        argv: p.argv.clone(),
        files: p
            .files
            .iter()
            .flat_map(|f| [f.bucket.clone(), f.key.clone()])
            .collect(),
    }
}

fn program_spec(p: &JobProgram) -> ProgramSpec {
    ProgramSpec {
        argv: p.argv.clone(),
        files: p
            .files
            .chunks_exact(2)
            .map(|f| ProgramFile {
                bucket: f[0].clone(),
                key: f[1].clone(),
            })
            .collect(),
    }
}

pub(super) fn phase_of(name: &str) -> JobPhase {
    match name {
        "reducing" => JobPhase::Reducing,
        "done" => JobPhase::Done,
        "failed" => JobPhase::Failed,
        "cancelled" => JobPhase::Cancelled,
        _ => JobPhase::Running,
    }
}

fn task_phase_of(name: &str) -> TaskPhase {
    match name {
        "running" => TaskPhase::Running,
        "done" => TaskPhase::Done,
        "failed" => TaskPhase::Failed,
        "cancelled" => TaskPhase::Cancelled,
        _ => TaskPhase::Pending,
    }
}

/// A new job's record, as `spec` was submitted.
pub(super) fn new_record(id: &str, spec: &JobSpec, created_ms: u64) -> JobRecord {
    JobRecord {
        id: id.to_string(),
        owner: spec.owner.clone(),
        admin: spec.admin,
        bucket: spec.bucket.clone(),
        prefix: spec.prefix.clone(),
        out_bucket: spec.out_bucket.clone(),
        out_prefix: spec.out_prefix.clone(),
        map: Some(program_record(&spec.map)),
        reduce: spec.reduce.as_ref().map(program_record),
        timeout_secs: spec.limits.timeout_secs,
        cpu_secs: spec.limits.cpu_secs,
        memory_mb: spec.limits.memory_mb,
        placement: spec.placement.name().to_string(),
        max_attempts: spec.max_attempts,
        per_node: u32::try_from(spec.per_node).unwrap_or(u32::MAX),
        created_ms,
        phase: JobPhase::Running.name().to_string(),
        ..JobRecord::default()
    }
}

/// The spec a job record was made from.
pub(super) fn spec_of(r: &JobRecord) -> JobSpec {
    JobSpec {
        owner: r.owner.clone(),
        admin: r.admin,
        bucket: r.bucket.clone(),
        prefix: r.prefix.clone(),
        out_bucket: r.out_bucket.clone(),
        out_prefix: r.out_prefix.clone(),
        map: r.map.as_ref().map(program_spec).unwrap_or_default(),
        reduce: r.reduce.as_ref().map(program_spec),
        limits: TaskLimits {
            timeout_secs: r.timeout_secs,
            cpu_secs: r.cpu_secs,
            memory_mb: r.memory_mb,
        },
        placement: if r.placement == Placement::Random.name() {
            Placement::Random
        } else {
            Placement::Locality
        },
        max_attempts: r.max_attempts.max(1),
        per_node: (r.per_node as usize).max(1),
    }
}

pub(super) fn task_record(t: &TaskStatus, reduce: bool) -> JobTaskRecord {
    let l = &t.locality;
    JobTaskRecord {
        key: t.key.clone(),
        size: t.size,
        phase: t.phase.name().to_string(),
        node: t.node.clone().unwrap_or_default(),
        attempts: t.attempts,
        outcome: t.outcome.clone(),
        stderr: t.stderr.clone(),
        bytes: vec![
            l.local,
            l.site,
            l.remote,
            l.inline,
            l.planned,
            l.ceiling_local,
            l.ceiling_site,
        ],
        random: vec![l.random_local, l.random_site],
        reduce,
        ..JobTaskRecord::default()
    }
}

pub(super) fn task_status(r: &JobTaskRecord) -> TaskStatus {
    let b = |i: usize| r.bytes.get(i).copied().unwrap_or(0);
    let f = |i: usize| r.random.get(i).copied().unwrap_or(0.0);
    TaskStatus {
        key: r.key.clone(),
        size: r.size,
        phase: task_phase_of(&r.phase),
        node: (!r.node.is_empty()).then(|| r.node.clone()),
        attempts: r.attempts,
        outcome: r.outcome.clone(),
        stderr: r.stderr.clone(),
        locality: Locality {
            local: b(0),
            site: b(1),
            remote: b(2),
            inline: b(3),
            planned: b(4),
            ceiling_local: b(5),
            ceiling_site: b(6),
            random_local: f(0),
            random_site: f(1),
        },
    }
}

/// A job's status from its records: the counts and failures from its
/// task records when given, else from the counts its driver last wrote.
pub(super) fn status_of(r: &JobRecord, tasks: Option<&JobTasks>) -> JobStatus {
    let spec = spec_of(r);
    let count = |i: usize| r.counts.get(i).copied().unwrap_or(0) as usize;
    let mut s = JobStatus {
        id: r.id.clone(),
        owner: r.owner.clone(),
        phase: phase_of(&r.phase),
        placement: spec.placement,
        bucket: r.bucket.clone(),
        prefix: r.prefix.clone(),
        out_bucket: r.out_bucket.clone(),
        out_prefix: r.out_prefix.clone(),
        reduce_key: spec.reduce.as_ref().map(|_| spec.reduce_key()),
        listed: r.listed,
        pending: count(0),
        running: count(1),
        done: count(2),
        failed: count(3),
        cancelled: count(4),
        retries: r.retries,
        locality: Locality::default(),
        error: (!r.error.is_empty()).then(|| r.error.clone()),
        created_ms: r.created_ms,
        finished_ms: (r.finished_ms > 0).then_some(r.finished_ms),
        failures: Vec::new(),
        reduce: None,
    };
    if let Some(t) = tasks {
        super::tally(&mut s, &t.maps);
        s.reduce = t.reduce.clone();
    }
    s
}

/// The counts `status_of` reads back: pending, running, done, failed,
/// cancelled.
pub(super) fn counts(tasks: &[TaskStatus]) -> Vec<u64> {
    let mut c = vec![0u64; 5];
    for t in tasks {
        let i = match t.phase {
            TaskPhase::Pending => 0,
            TaskPhase::Running => 1,
            TaskPhase::Done => 2,
            TaskPhase::Failed => 3,
            TaskPhase::Cancelled => 4,
        };
        c[i] += 1;
    }
    c
}

/// A job's task records, read back.
#[derive(Default)]
pub(super) struct JobTasks {
    /// Map tasks in input key order (the order they were listed in).
    pub maps: Vec<TaskStatus>,
    pub reduce: Option<TaskStatus>,
    pub cancel_requested: bool,
}

impl ObjectStore {
    fn jobs_table(&self) -> Result<Table<JobRecord>> {
        self.root_table::<JobRecord>()
    }

    fn job_tasks_table(&self) -> Result<Table<JobTaskRecord>> {
        self.root_table::<JobTaskRecord>()
    }

    /// Store `job` (its revision set here: a later write wins).
    pub(super) async fn put_job_record(&self, job: &JobRecord) -> Result<()> {
        let mut j = job.clone();
        j.revision = self.revision();
        let t = self.jobs_table()?;
        Ok(t.put(&job_key(&self.inner.root_keys, &j.id), &j).await?)
    }

    /// Store `job` and the given tasks in one atomic write.
    pub(super) async fn put_job_and_tasks(
        &self,
        job: &JobRecord,
        tasks: &[TaskStatus],
    ) -> Result<()> {
        let keys = &self.inner.root_keys;
        let jobs = self.jobs_table()?;
        let task_table = self.job_tasks_table()?;
        let mut j = job.clone();
        j.revision = self.revision();
        let mut ops: Vec<MetaOp> = vec![jobs.put_op(&job_key(keys, &j.id), &j)];
        for t in tasks {
            let mut r = task_record(t, false);
            r.revision = self.revision();
            ops.push(task_table.put_op(&task_key(keys, &j.id, &t.key), &r));
        }
        Ok(jobs.apply(ops).await?)
    }

    /// Store one task's state; `reduce` names the job's reduce task.
    pub(super) async fn put_job_task(&self, id: &str, t: &TaskStatus, reduce: bool) -> Result<()> {
        let keys = &self.inner.root_keys;
        let key = if reduce {
            suffixed(keys, id, REDUCE_SUFFIX)
        } else {
            task_key(keys, id, &t.key)
        };
        let mut r = task_record(t, reduce);
        r.revision = self.revision();
        Ok(self.job_tasks_table()?.put(&key, &r).await?)
    }

    /// Ask the driver of job `id` to cancel it.
    pub(super) async fn put_job_cancel(&self, id: &str) -> Result<()> {
        let key = suffixed(&self.inner.root_keys, id, CANCEL_SUFFIX);
        let r = JobTaskRecord {
            phase: TaskPhase::Cancelled.name().to_string(),
            revision: self.revision(),
            ..JobTaskRecord::default()
        };
        Ok(self.job_tasks_table()?.put(&key, &r).await?)
    }

    pub(super) async fn job_cancel_requested(&self, id: &str) -> Result<bool> {
        let key = suffixed(&self.inner.root_keys, id, CANCEL_SUFFIX);
        Ok(self.job_tasks_table()?.get(&key).await?.is_some())
    }

    pub(super) async fn get_job_record(&self, id: &str) -> Result<Option<JobRecord>> {
        let key = job_key(&self.inner.root_keys, id);
        Ok(self.jobs_table()?.get(&key).await?.filter(|j| !j.deleted))
    }

    /// Every job record, in no useful order.
    pub(super) async fn job_records(&self) -> Result<Vec<JobRecord>> {
        let mut scan = self.jobs_table()?.scan(Vec::new(), None).with_page(1000);
        let mut out = Vec::new();
        while let Some((_, j)) = scan.next().await? {
            if !j.deleted {
                out.push(j);
            }
        }
        scan.repair_stale();
        Ok(out)
    }

    /// Every task record of job `id`.
    pub(super) async fn job_task_records(&self, id: &str) -> Result<JobTasks> {
        let start = job_key(&self.inner.root_keys, id);
        let end = metadata::db::prefix_end(&start);
        let mut scan = self.job_tasks_table()?.scan(start, end).with_page(1000);
        let mut out = JobTasks::default();
        let job_len = job_key(&self.inner.root_keys, id).len();
        while let Some((key, r)) = scan.next().await? {
            match key.get(job_len..) {
                Some(CANCEL_SUFFIX) => out.cancel_requested = true,
                Some(REDUCE_SUFFIX) => out.reduce = Some(task_status(&r)),
                _ if !r.deleted => out.maps.push(task_status(&r)),
                _ => {}
            }
        }
        scan.repair_stale();
        out.maps.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_survives_its_record() {
        let mut spec = JobSpec::new("alice", "in", "logs/", "out", "wc/");
        spec.map = ProgramSpec {
            argv: vec!["python3".into(), "map.py".into()],
            files: vec![ProgramFile {
                bucket: "code".into(),
                key: "jobs/map.py".into(),
            }],
        };
        spec.reduce = Some(ProgramSpec {
            argv: vec!["lua".into(), "reduce.lua".into()],
            files: Vec::new(),
        });
        spec.placement = Placement::Random;
        spec.max_attempts = 5;
        spec.per_node = 3;
        spec.limits.memory_mb = 64;
        let back = spec_of(&new_record("j1", &spec, 7));
        assert_eq!(format!("{back:?}"), format!("{spec:?}"));
    }

    #[test]
    fn a_task_survives_its_record() {
        let mut t = TaskStatus::new("a/b".into(), 42);
        t.phase = TaskPhase::Done;
        t.node = Some("n1".into());
        t.attempts = 2;
        t.outcome = "ok".into();
        t.locality.local = 9;
        t.locality.random_site = 1.5;
        let back = task_status(&task_record(&t, false));
        assert_eq!(format!("{back:?}"), format!("{t:?}"));
    }
}
