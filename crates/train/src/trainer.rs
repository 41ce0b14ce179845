//! The training loop: mini-batches, evaluations, stop rules, snapshots, checkpoints, divergence.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle::{DType, Device, Tensor};
use indicatif::{ProgressBar, ProgressStyle};
use stiff_models::Model;

use crate::checkpoint::{load_checkpoint, save_checkpoint, Checkpoint, PendingWindow, TrainState};
use crate::data::{epoch_order, eval_subset, LabelledData};
use crate::fast_mlp::FastMlp;
use crate::optim::AutogradStep;
use crate::snapshot::LogRecord;
use crate::{
    Backend, Metrics, Result, RunReport, RunStatus, Snapshot, SnapshotReason, SnapshotRecord, SnapshotSink, StopReason,
    ThresholdRule, ThresholdWindow, TrainConfig, TrainError,
};

/// How progress is shown.
#[derive(Debug, Clone, Default)]
pub enum Progress {
    /// A bar on stderr, hidden automatically when stderr is not a terminal. Default.
    #[default]
    Auto,
    /// No bar.
    Hidden,
    /// The caller's bar (e.g. one line of an `indicatif::MultiProgress`); its length is set to
    /// `max_steps`.
    Bar(ProgressBar),
}

/// Which step implementation a trainer uses.
#[derive(Debug)]
enum Engine {
    Autograd(AutogradStep),
    Fast(Box<FastMlp>),
}

/// A training run in progress: the model, its optimizer state and the loop state. Create with
/// [`Trainer::new`] or [`Trainer::resume`], then call [`Trainer::run`] (again after raising
/// `max_steps`, if wanted: the continuation is identical to an uninterrupted run).
#[derive(Debug)]
pub struct Trainer {
    cfg: TrainConfig,
    model: Model,
    engine: Engine,
    state: TrainState,
    /// The fast path's weights are newer than the model's `Var`s.
    dirty: bool,
    progress: Progress,
    /// Cached `(epoch, order)`.
    order: Option<(u64, Vec<usize>)>,
}

/// Evaluation sets prepared once per `run` call.
struct EvalSets {
    train_x: Tensor,
    train_y: Tensor,
    val: Option<(Tensor, Tensor)>,
}

impl Trainer {
    /// A fresh run of `model` (step 0). Picks the step implementation per [`TrainConfig::backend`].
    pub fn new(model: Model, cfg: TrainConfig) -> Result<Self> {
        cfg.validate()?;
        let engine = make_engine(&model, &cfg)?;
        Ok(Self {
            cfg,
            model,
            engine,
            state: TrainState::default(),
            dirty: false,
            progress: Progress::Auto,
            order: None,
        })
    }

    /// Continues from a checkpoint file. `cfg`: `None` keeps the stored configuration; a new one
    /// may change the stop rules, evaluation and snapshot settings, but not the optimizer, batch
    /// size, seed or backend (the continuation would not be the same run).
    pub fn resume(path: &Path, cfg: Option<TrainConfig>, device: &Device) -> Result<Self> {
        let ck = load_checkpoint(path, device)?;
        Self::from_checkpoint(ck, cfg, path)
    }

    /// As [`Trainer::resume`], from an already loaded checkpoint; `path` only names it in errors.
    pub fn from_checkpoint(ck: Checkpoint, cfg: Option<TrainConfig>, path: &Path) -> Result<Self> {
        let cfg = cfg.unwrap_or_else(|| ck.config.clone());
        cfg.validate()?;
        let old = &ck.config;
        if cfg.optimizer != old.optimizer
            || cfg.batch_size != old.batch_size
            || cfg.seed != old.seed
            || cfg.backend != old.backend
        {
            return Err(TrainError::Checkpoint {
                path: path.to_path_buf(),
                msg: "the new configuration changes the optimizer, batch size, seed or backend of the stored run"
                    .into(),
            });
        }
        let mut engine = make_engine(&ck.model, &cfg)?;
        match &mut engine {
            Engine::Autograd(a) => a.set_state(ck.m, ck.v, ck.state.updates)?,
            Engine::Fast(f) => f.set_moments(&ck.m, &ck.v, ck.state.updates)?,
        }
        Ok(Self { cfg, model: ck.model, engine, state: ck.state, dirty: false, progress: Progress::Auto, order: None })
    }

    /// Sets how progress is shown (default [`Progress::Auto`]).
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = progress;
        self
    }

    /// The training configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// Changes the stop rules / evaluation settings between `run` calls (same restrictions as
    /// [`Trainer::resume`]).
    pub fn set_config(&mut self, cfg: TrainConfig) -> Result<()> {
        cfg.validate()?;
        let old = &self.cfg;
        if cfg.optimizer != old.optimizer
            || cfg.batch_size != old.batch_size
            || cfg.seed != old.seed
            || cfg.backend != old.backend
        {
            return Err(TrainError::Config(
                "set_config cannot change the optimizer, batch size, seed or backend".into(),
            ));
        }
        self.cfg = cfg;
        Ok(())
    }

    /// The loop state (what a checkpoint stores besides weights and moments).
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// Whether the fast MLP step is in use.
    pub fn uses_fast_path(&self) -> bool {
        matches!(self.engine, Engine::Fast(_))
    }

    /// The model with its current weights.
    pub fn model(&mut self) -> Result<&Model> {
        self.sync()?;
        Ok(&self.model)
    }

    /// The model with its current weights, ending the trainer.
    pub fn into_model(mut self) -> Result<Model> {
        self.sync()?;
        Ok(self.model)
    }

    /// Writes a checkpoint of the current state to `path` (atomically).
    pub fn save_checkpoint(&mut self, path: &Path) -> Result<()> {
        self.sync()?;
        let (m, v) = match &self.engine {
            Engine::Autograd(a) => {
                let (m, v, _) = a.state();
                (m.to_vec(), v.to_vec())
            }
            Engine::Fast(f) => f.moments(&self.model)?,
        };
        self.state.updates = match &self.engine {
            Engine::Autograd(a) => a.updates(),
            Engine::Fast(f) => f.updates(),
        };
        save_checkpoint(path, &self.model, &m, &v, &self.cfg, &self.state)
    }

    fn sync(&mut self) -> Result<()> {
        if self.dirty {
            if let Engine::Fast(f) = &self.engine {
                f.write_to(&self.model)?;
            }
            self.dirty = false;
        }
        Ok(())
    }

    /// Trains until a stop rule fires or the run diverges. `train`: the training set (shuffled
    /// mini-batches); `val`: the validation data for validation loss/accuracy and overfitting
    /// detection (pass a subset to save time). Snapshots go to `sink`. Divergence is reported in
    /// [`RunReport::status`], not as an error.
    pub fn run(
        &mut self,
        train: &LabelledData,
        val: Option<&LabelledData>,
        sink: &mut dyn SnapshotSink,
    ) -> Result<RunReport> {
        let classes = self.model.config().num_classes;
        let features = self.model.config().input.numel();
        for (d, what) in [(Some(train), "training data"), (val, "validation data")] {
            let Some(d) = d else { continue };
            d.check_labels(classes, what)?;
            if d.x.elem_count() != d.len() * features {
                return Err(TrainError::Data {
                    what,
                    msg: format!("x has shape {:?}, the model expects {features} features per example", d.x.dims()),
                });
            }
        }
        let n = train.len();
        let bsz = self.cfg.batch_size;
        if n < bsz {
            return Err(TrainError::Data {
                what: "training data",
                msg: format!("{n} examples, fewer than the batch size {bsz}"),
            });
        }
        let device = self.model.device().clone();
        let sub = eval_subset(n, self.cfg.train_eval_subset, self.cfg.seed);
        let sub = train.select(&sub, &device)?;
        let sets = EvalSets {
            train_x: sub.x.clone(),
            train_y: sub.labels_tensor(&device)?,
            val: match val {
                Some(v) => Some((v.x.to_device(&device)?, v.labels_tensor(&device)?)),
                None => None,
            },
        };
        // Training inputs in the form the step needs: flat f32 rows for the fast path, a tensor on
        // the model's device otherwise. Neither copies when the data is already in that form.
        let train_x = match self.engine {
            Engine::Fast(_) => train.x.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_from(1)?.contiguous()?,
            Engine::Autograd(_) => train.x.to_device(&device)?,
        };
        let train_y_dev = train.labels_tensor(&device)?;

        let mut log = MetricsLog::open(self.cfg.metrics_path.as_deref(), self.state.step, self.state.started)?;
        let bar = match &self.progress {
            Progress::Auto => ProgressBar::new(self.cfg.max_steps),
            Progress::Hidden => ProgressBar::hidden(),
            Progress::Bar(b) => b.clone(),
        };
        bar.set_length(self.cfg.max_steps);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps {msg} [{elapsed_precise}<{eta_precise}]")
        {
            bar.set_style(style);
        }
        bar.set_position(self.state.step);

        let mut report = RunReport {
            status: RunStatus::Completed { stop: StopReason::MaxSteps },
            step: self.state.step,
            epoch: self.state.epoch,
            images_seen: self.state.images_seen,
            history: Vec::new(),
            snapshots: Vec::new(),
            steps_per_sec: 0.0,
        };
        let clock = Instant::now();
        let elapsed0 = self.state.elapsed_s;
        let mut step_time = 0f64;
        let mut steps_here = 0u64;
        let mut stop: Option<RunStatus> = None;

        if !self.state.started {
            self.state.started = true;
            let ctx = EventCtx { sets: &sets, clock: &clock, elapsed0 };
            stop = self.events(&ctx, &mut log, sink, &mut report, &bar)?;
        }
        while stop.is_none() {
            if self.state.step >= self.cfg.max_steps {
                stop = Some(RunStatus::Completed { stop: StopReason::MaxSteps });
                break;
            }
            if self.cfg.max_epochs.is_some_and(|e| self.state.epoch >= e) {
                stop = Some(RunStatus::Completed { stop: StopReason::MaxEpochs });
                break;
            }
            let t0 = Instant::now();
            let loss = self.train_step(&train_x, &train_y_dev, &train.labels, n)?;
            step_time += t0.elapsed().as_secs_f64();
            steps_here += 1;
            if !loss.is_finite() {
                stop = Some(RunStatus::Diverged {
                    step: self.state.step,
                    reason: format!("non-finite mini-batch loss ({loss}) at step {}", self.state.step),
                });
                break;
            }
            self.state.batch_loss_sum += loss;
            self.state.batch_loss_count += 1;
            if let ThresholdRule::RunningMean { steps } = self.cfg.threshold_rule {
                self.state.recent_losses.push_back(loss);
                while self.state.recent_losses.len() as u64 > steps {
                    self.state.recent_losses.pop_front();
                }
            }
            if self.state.step % 50 == 0 {
                bar.set_position(self.state.step);
            }
            let ctx = EventCtx { sets: &sets, clock: &clock, elapsed0 };
            stop = self.events(&ctx, &mut log, sink, &mut report, &bar)?;
        }
        let status = stop.unwrap_or(RunStatus::Completed { stop: StopReason::MaxSteps });
        self.state.elapsed_s = elapsed0 + clock.elapsed().as_secs_f64();
        self.sync()?;
        if !status.is_diverged() {
            let last_eval_here = report.history.last().map(|m| m.step) == Some(self.state.step);
            let metrics = match report.history.last() {
                Some(m) if last_eval_here => m.clone(),
                _ => {
                    let m = self.measure(&sets, &clock, elapsed0)?;
                    log.write(&LogRecord::Eval(&m))?;
                    report.history.push(m.clone());
                    m
                }
            };
            self.snapshot(SnapshotReason::Final, &metrics, &mut log, sink, &mut report)?;
            if let Some(p) = self.cfg.checkpoint_path.clone() {
                self.save_checkpoint(&p)?;
            }
        }
        log.write(&LogRecord::End { step: self.state.step, status: &status })?;
        log.flush()?;
        bar.set_position(self.state.step);
        if matches!(self.progress, Progress::Auto) {
            bar.finish();
        }
        report.status = status;
        report.step = self.state.step;
        report.epoch = self.state.epoch;
        report.images_seen = self.state.images_seen;
        report.steps_per_sec = if step_time > 0.0 { steps_here as f64 / step_time } else { 0.0 };
        Ok(report)
    }

    /// One optimizer step on the next mini-batch; advances step, epoch and position.
    fn train_step(&mut self, x: &Tensor, y_dev: &Tensor, labels: &[u32], n: usize) -> Result<f64> {
        let bsz = self.cfg.batch_size;
        let epoch = self.state.epoch;
        if self.order.as_ref().map(|(e, _)| *e) != Some(epoch) {
            self.order = Some((epoch, epoch_order(n, self.cfg.seed, epoch)));
        }
        let order = &self.order.as_ref().expect("order cached above").1;
        let idx = &order[self.state.pos..self.state.pos + bsz];
        let loss = match &mut self.engine {
            Engine::Fast(f) => {
                let d = f.input_dim();
                let (storage, layout) = x.storage_and_layout();
                let candle::Storage::Cpu(cpu) = &*storage else {
                    return Err(TrainError::Data { what: "training data", msg: "fast path needs CPU inputs".into() });
                };
                let (start, end) = layout.contiguous_offsets().ok_or_else(|| TrainError::Data {
                    what: "training data",
                    msg: "inputs are not contiguous".into(),
                })?;
                let all = &cpu.as_slice::<f32>()?[start..end];
                let buf = f.input_mut();
                for (dst, &i) in buf.chunks_exact_mut(d).zip(idx) {
                    dst.copy_from_slice(&all[i * d..(i + 1) * d]);
                }
                let yb: Vec<u32> = idx.iter().map(|&i| labels[i]).collect();
                drop(storage);
                self.dirty = true;
                f.step_prepared(&yb)?
            }
            Engine::Autograd(a) => {
                let it: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
                let it = Tensor::new(it.as_slice(), x.device())?;
                let xb = x.index_select(&it, 0)?;
                let yb = y_dev.index_select(&it, 0)?;
                a.step(&self.model, &xb, &yb)?
            }
        };
        self.state.step += 1;
        self.state.images_seen += bsz as u64;
        self.state.updates = self.state.step;
        self.state.pos += bsz;
        if self.state.pos + bsz > n {
            self.state.epoch += 1;
            self.state.pos = 0;
        }
        Ok(loss)
    }

    /// Evaluates the model (after syncing weights): training subset and validation data.
    fn measure(&mut self, sets: &EvalSets, clock: &Instant, elapsed0: f64) -> Result<Metrics> {
        let m = self.evaluate(sets, clock, elapsed0)?;
        self.state.batch_loss_sum = 0.0;
        self.state.batch_loss_count = 0;
        Ok(m)
    }

    /// [`Self::measure`] without resetting the mini-batch loss average (evaluations outside the
    /// regular schedule must not change what the regular ones report).
    fn evaluate(&mut self, sets: &EvalSets, clock: &Instant, elapsed0: f64) -> Result<Metrics> {
        self.sync()?;
        let eb = self.cfg.eval_batch;
        let (train_loss, train_acc) = self.model.evaluate(&sets.train_x, &sets.train_y, eb)?;
        let (val_loss, val_acc) = match &sets.val {
            Some((x, y)) => {
                let (l, a) = self.model.evaluate(x, y, eb)?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let batch_loss =
            (self.state.batch_loss_count > 0).then(|| self.state.batch_loss_sum / self.state.batch_loss_count as f64);
        Ok(Metrics {
            step: self.state.step,
            epoch: self.state.epoch,
            images_seen: self.state.images_seen,
            train_loss,
            train_acc,
            val_loss,
            val_acc,
            batch_loss,
            elapsed_s: elapsed0 + clock.elapsed().as_secs_f64(),
        })
    }

    /// Largest parameter magnitude (infinite if any parameter is not finite).
    fn max_abs_param(&self) -> Result<f64> {
        if let Engine::Fast(f) = &self.engine {
            return Ok(f.max_abs_param());
        }
        let mut mx = 0f64;
        for v in self.model.vars() {
            let a = v.as_tensor().abs()?.to_dtype(DType::F64)?;
            let s = a.sum_all()?.to_scalar::<f64>()?;
            if !s.is_finite() {
                return Ok(f64::INFINITY);
            }
            mx = mx.max(a.max_all()?.to_scalar::<f64>()?);
        }
        Ok(mx)
    }

    /// Mean of the last `steps` mini-batch losses under [`ThresholdRule::RunningMean`], once
    /// that many steps have been taken.
    fn smoothed_loss(&self) -> Option<f64> {
        let ThresholdRule::RunningMean { steps } = self.cfg.threshold_rule else { return None };
        let r = &self.state.recent_losses;
        (r.len() as u64 == steps && steps > 0).then(|| r.iter().sum::<f64>() / r.len() as f64)
    }

    fn crossed(&self, th: f64) -> bool {
        self.state.thresholds_crossed.iter().any(|c| c.to_bits() == th.to_bits())
    }

    fn any_threshold_below(&self, loss: f64) -> bool {
        self.cfg.thresholds.iter().any(|&th| !self.crossed(th) && loss < th)
    }

    /// Snapshots every threshold not yet crossed that `loss` is below (highest first, each
    /// once), and opens its window.
    fn cross_thresholds(
        &mut self,
        loss: f64,
        m: &Metrics,
        log: &mut MetricsLog,
        sink: &mut dyn SnapshotSink,
        report: &mut RunReport,
    ) -> Result<()> {
        let mut ths = self.cfg.thresholds.clone();
        ths.sort_by(|a, b| b.total_cmp(a));
        for th in ths {
            if !self.crossed(th) && loss < th {
                self.state.thresholds_crossed.push(th);
                self.snapshot(SnapshotReason::Threshold { threshold: th }, m, log, sink, report)?;
                if let Some(w) = self.cfg.threshold_window.filter(|w| w.count > 1) {
                    let due = self.state.step.saturating_add(w.every);
                    self.state.pending_windows.push(PendingWindow { threshold: th, index: 1, due });
                }
            }
        }
        Ok(())
    }

    /// Takes the window snapshots due at this step (one evaluation shared by all of them).
    fn window_snapshots(
        &mut self,
        ctx: &EventCtx<'_>,
        log: &mut MetricsLog,
        sink: &mut dyn SnapshotSink,
        report: &mut RunReport,
    ) -> Result<()> {
        let step = self.state.step;
        let due: Vec<PendingWindow> = self.state.pending_windows.iter().copied().filter(|p| p.due == step).collect();
        if due.is_empty() {
            return Ok(());
        }
        let m = self.evaluate(ctx.sets, ctx.clock, ctx.elapsed0)?;
        let w = self.cfg.threshold_window.unwrap_or(ThresholdWindow { count: 1, every: 1 });
        for p in due {
            self.snapshot(
                SnapshotReason::ThresholdWindow { threshold: p.threshold, index: p.index },
                &m,
                log,
                sink,
                report,
            )?;
        }
        for p in self.state.pending_windows.iter_mut().filter(|p| p.due == step) {
            p.index += 1;
            p.due = step.saturating_add(w.every);
        }
        self.state.pending_windows.retain(|p| p.index < w.count);
        Ok(())
    }

    fn snapshot(
        &mut self,
        reason: SnapshotReason,
        metrics: &Metrics,
        log: &mut MetricsLog,
        sink: &mut dyn SnapshotSink,
        report: &mut RunReport,
    ) -> Result<()> {
        self.sync()?;
        let snap = Snapshot {
            reason,
            step: self.state.step,
            epoch: self.state.epoch,
            images_seen: self.state.images_seen,
            metrics,
            smoothed_loss: self.smoothed_loss(),
            model: &self.model,
        };
        sink.on_snapshot(&snap).map_err(|source| TrainError::Sink {
            step: self.state.step,
            reason: reason.to_string(),
            source,
        })?;
        log.write(&LogRecord::Snapshot { step: self.state.step, reason })?;
        report.snapshots.push(SnapshotRecord { reason, step: self.state.step });
        Ok(())
    }

    /// Everything due after a step (or at step 0): evaluation, divergence check, threshold and
    /// overfitting snapshots, step snapshots, checkpoint. Returns a status when the run must stop.
    fn events(
        &mut self,
        ctx: &EventCtx<'_>,
        log: &mut MetricsLog,
        sink: &mut dyn SnapshotSink,
        report: &mut RunReport,
        bar: &ProgressBar,
    ) -> Result<Option<RunStatus>> {
        let step = self.state.step;
        let regular = step % self.cfg.eval_every == 0;
        let snap_here = self.cfg.snapshot_steps.contains(&step);
        let mut stop = None;
        if regular || snap_here {
            let m = self.measure(ctx.sets, ctx.clock, ctx.elapsed0)?;
            log.write(&LogRecord::Eval(&m))?;
            report.history.push(m.clone());
            bar.set_position(step);
            bar.set_message(format!(
                "train loss {:.4} acc {:.3}{}",
                m.train_loss,
                m.train_acc,
                match (m.val_loss, m.val_acc) {
                    (Some(l), Some(a)) => format!(" | val loss {l:.4} acc {a:.3}"),
                    _ => String::new(),
                }
            ));
            let wmax = self.max_abs_param()?;
            if !m.train_loss.is_finite() || !wmax.is_finite() || wmax > self.cfg.max_abs_weight {
                let reason = if m.train_loss.is_finite() && wmax.is_finite() {
                    format!("a parameter reached |w| = {wmax:.3e} > {:.3e} at step {step}", self.cfg.max_abs_weight)
                } else {
                    format!("non-finite training loss or parameters at step {step}")
                };
                return Ok(Some(RunStatus::Diverged { step, reason }));
            }
            if snap_here {
                self.snapshot(SnapshotReason::Step { step }, &m, log, sink, report)?;
            }
            if self.cfg.threshold_rule == ThresholdRule::Evaluated {
                self.cross_thresholds(m.train_loss, &m, log, sink, report)?;
            }
            // Overfitting onset, on the regular evaluation schedule only.
            if let (true, Some(patience), Some(vl)) = (regular, self.cfg.overfit_patience, m.val_loss) {
                let o = &mut self.state.overfit;
                if o.best_val.is_none_or(|b| vl < b) {
                    o.best_val = Some(vl);
                    o.best_step = step;
                    o.train_at_best = m.train_loss;
                    o.evals_since_best = 0;
                } else {
                    o.evals_since_best += 1;
                    if o.onset_step.is_none() && o.evals_since_best >= patience && m.train_loss < o.train_at_best {
                        o.onset_step = Some(step);
                        let best_step = o.best_step;
                        self.snapshot(SnapshotReason::OverfittingOnset { best_step }, &m, log, sink, report)?;
                        if self.cfg.stop_at_overfit {
                            stop = stop.or(Some(RunStatus::Completed { stop: StopReason::OverfittingOnset }));
                        }
                    }
                }
            }
        }
        if let (ThresholdRule::RunningMean { .. }, Some(smoothed)) = (self.cfg.threshold_rule, self.smoothed_loss()) {
            if self.any_threshold_below(smoothed) {
                let m = self.evaluate(ctx.sets, ctx.clock, ctx.elapsed0)?;
                self.cross_thresholds(smoothed, &m, log, sink, report)?;
            }
        }
        self.window_snapshots(ctx, log, sink, report)?;
        let all_crossed = !self.cfg.thresholds.is_empty()
            && self
                .cfg
                .thresholds
                .iter()
                .all(|t| self.state.thresholds_crossed.iter().any(|c| c.to_bits() == t.to_bits()));
        if self.cfg.stop_at_last_threshold && all_crossed && self.state.pending_windows.is_empty() {
            // Takes precedence over an overfitting stop at the same step, as it always has.
            stop = Some(RunStatus::Completed { stop: StopReason::ThresholdsReached });
        }
        if let (Some(every), Some(p)) = (self.cfg.checkpoint_every, self.cfg.checkpoint_path.clone()) {
            if step > 0 && step % every == 0 {
                self.state.elapsed_s = ctx.elapsed0 + ctx.clock.elapsed().as_secs_f64();
                log.flush()?;
                self.save_checkpoint(&p)?;
            }
        }
        Ok(stop)
    }
}

struct EventCtx<'a> {
    sets: &'a EvalSets,
    clock: &'a Instant,
    elapsed0: f64,
}

fn make_engine(model: &Model, cfg: &TrainConfig) -> Result<Engine> {
    let fast = match cfg.backend {
        Backend::Autograd => false,
        Backend::FastMlp => {
            FastMlp::check_supported(model).map_err(TrainError::FastPathUnsupported)?;
            true
        }
        Backend::Auto => FastMlp::check_supported(model).is_ok(),
    };
    Ok(if fast {
        Engine::Fast(Box::new(FastMlp::new(model, cfg.optimizer, cfg.batch_size)?))
    } else {
        Engine::Autograd(AutogradStep::new(model, cfg.optimizer)?)
    })
}

/// The JSON-lines metrics file (or nothing).
struct MetricsLog {
    out: Option<(PathBuf, BufWriter<File>)>,
}

impl MetricsLog {
    /// A fresh run truncates the file; a resumed one keeps the records up to `step` (dropping
    /// any written after the checkpoint by an interrupted run) and appends.
    fn open(path: Option<&Path>, step: u64, started: bool) -> Result<Self> {
        let Some(path) = path else { return Ok(Self { out: None }) };
        let io = |e| TrainError::Io { path: path.to_path_buf(), source: e };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut kept = String::new();
        if started {
            if let Ok(old) = std::fs::read_to_string(path) {
                for line in old.lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap_or(serde_json::Value::Null);
                    let keep = v.get("step").and_then(|s| s.as_u64()).is_some_and(|s| s <= step)
                        && v.get("event").and_then(|e| e.as_str()) != Some("end");
                    if keep {
                        kept.push_str(line);
                        kept.push('\n');
                    }
                }
            }
        }
        // Rewrite atomically, then append to the same file.
        stiff_fs::write_atomic(path, kept.as_bytes()).map_err(|e| io(e.source))?;
        let f = std::fs::OpenOptions::new().append(true).open(path).map_err(io)?;
        Ok(Self { out: Some((path.to_path_buf(), BufWriter::new(f))) })
    }

    fn write(&mut self, rec: &LogRecord<'_>) -> Result<()> {
        if let Some((path, w)) = &mut self.out {
            /// Every line starts with the log's `schema_version`.
            #[derive(serde::Serialize)]
            struct Versioned<'r, 'a> {
                schema_version: u32,
                #[serde(flatten)]
                rec: &'r LogRecord<'a>,
            }
            let line = serde_json::to_string(&Versioned { schema_version: crate::SCHEMA_VERSION, rec })
                .map_err(|e| TrainError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
            writeln!(w, "{line}").map_err(|e| TrainError::Io { path: path.clone(), source: e })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if let Some((path, w)) = &mut self.out {
            w.flush().map_err(|e| TrainError::Io { path: path.clone(), source: e })?;
        }
        Ok(())
    }
}
