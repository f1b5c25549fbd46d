//! The apply stage: maps the source's row changes to cache operations, groups them into
//! steps, and applies each step with its checkpoint.

use std::path::PathBuf;

use tracing::{debug, info};

use crate::checkpoint::{Checkpoint, ServerIdentity};
use crate::error::Error;
use crate::mapper::{CacheOp, Mapper};
use crate::sink::{RedisSink, Step};
use crate::source::{Commit, SourceItem};

pub struct Applier {
    mapper: Mapper,
    sink: RedisSink,
    step: Step,
    max_ops: usize,
    /// Recorded in every checkpoint, so a resume against another server is caught.
    server: ServerIdentity,
    checkpoint_file: Option<PathBuf>,
    /// Last checkpoint applied, for the shutdown log line.
    applied: Option<Checkpoint>,
}

impl Applier {
    pub fn new(
        mapper: Mapper,
        sink: RedisSink,
        max_ops: usize,
        server: ServerIdentity,
        checkpoint_file: Option<PathBuf>,
    ) -> Self {
        Applier {
            mapper,
            sink,
            step: Step::default(),
            max_ops,
            server,
            checkpoint_file,
            applied: None,
        }
    }

    pub fn applied(&self) -> Option<&Checkpoint> {
        self.applied.as_ref()
    }

    /// Takes one item from the source. May apply a split step of a huge transaction.
    pub async fn handle(&mut self, item: SourceItem) -> Result<(), Error> {
        match item {
            SourceItem::Changes(changes) => {
                for change in &changes {
                    self.mapper.map(change, self.step.ops_mut())?;
                    if self.step.open_too_large(self.max_ops) {
                        self.apply_split().await?;
                    }
                }
            }
            SourceItem::Commit(commit) => self.step.commit(commit),
        }
        Ok(())
    }

    /// True when the complete transactions gathered so far fill a step.
    pub fn step_full(&self) -> bool {
        self.step.len() >= self.max_ops
    }

    /// Applies every complete transaction gathered so far, with the checkpoint past them.
    pub async fn flush(&mut self) -> Result<(), Error> {
        let (ops, commit, transactions) = self.step.take_complete();
        let Some(commit) = commit else {
            debug_assert!(ops.is_empty());
            return Ok(());
        };
        self.apply(&ops, Some(commit)).await?;
        debug!(ops = ops.len(), transactions, "step applied");
        Ok(())
    }

    async fn apply_split(&mut self) -> Result<(), Error> {
        let first = !self.step.open_was_split();
        let (ops, commit) = self.step.take_split();
        if first {
            info!(
                max_ops_per_step = self.max_ops,
                "transaction larger than one step: splitting it; only its last step moves the checkpoint"
            );
        }
        self.apply(&ops, commit).await
    }

    async fn apply(&mut self, ops: &[CacheOp], commit: Option<Commit>) -> Result<(), Error> {
        let checkpoint = commit.map(|c| Checkpoint::new(c.position, self.server.clone(), c.time));
        self.sink.apply(ops, checkpoint.as_ref()).await?;
        if let Some(cp) = checkpoint {
            if let Some(path) = &self.checkpoint_file {
                write_file_atomically(path, &cp.encode())?;
            }
            self.applied = Some(cp);
        }
        Ok(())
    }
}

/// Writes a file so that readers see either the old or the new content, never a mix.
fn write_file_atomically(path: &PathBuf, content: &str) -> Result<(), Error> {
    let err = |e: std::io::Error| Error::CheckpointFile {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}
