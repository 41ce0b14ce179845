//! The recording tape. While [`Recording`] is active on a thread, every tapped layer
//! ([`crate::nn`]) that runs on that thread records what its per-example parameter gradient
//! needs (its input, or the normalised input of a norm layer, and its geometry) and adds a zero
//! probe `Var` to its output, so one backward pass of the summed loss yields every tapped layer's
//! per-example output deltas (`dL/d out`, row `i` = example `i`). Outside a recording the tapped
//! layers are plain candle ops.

use std::cell::RefCell;

use candle::{Tensor, TensorId, Var};
use stiff_models::ops::Window;

/// What a record's per-example gradient is computed from.
#[derive(Debug, Clone)]
pub(crate) enum RecKind {
    /// `z = a W^T (+ b)`; input `a: (n, ..., in)`, output `(n, ..., out)`.
    Linear,
    /// `z = a W (+ b)` with the weight held `(in, out)` (an ONNX MatMul's constant operand); the
    /// per-example weight gradient is `a^T d`, in the weight's own layout.
    LinearT,
    /// `z = conv2d(a, W) (+ b)`; input `(n, C, H, W)`, output `(n, C_out, ho, wo)`.
    Conv { win: Window },
    /// `y = x_hat * gamma (+ beta)`; the record's input is `x_hat`, same shape as `y`.
    /// `Channel`: parameters per dim 1 (batch norm); `Trailing(k)`: over the last `k` dims (layer norm).
    Norm { layout: NormLayout },
    /// `y = x + p` with a parameter `p` (a learned positional table, a free-standing bias) of
    /// `shape`, broadcast over the batch and possibly other leading or size-1 dims; only `bias`
    /// is set. Its per-example gradient is the delta summed over the broadcast dims.
    Offset { shape: Vec<usize> },
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum NormLayout {
    Channel,
    Trailing(usize),
}

/// One tapped layer application.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub name: String,
    pub kind: RecKind,
    /// Detached input (or `x_hat`).
    pub input: Tensor,
    /// Zero variable added to the output.
    pub probe: Var,
    pub weight: Option<Tensor>,
    pub bias: Option<Tensor>,
}

/// What one recorded forward pass left behind.
#[derive(Debug, Default)]
pub(crate) struct Tape {
    pub records: Vec<Record>,
    /// Tensors the tapped layers declared to be buffers (batch norm running statistics).
    pub buffers: Vec<TensorId>,
    /// A chunk pass: tapped convs may run [`crate::conv_op`] (no kernel gradient); the planning
    /// pass needs autograd's kernel gradients and leaves this off.
    pub own_conv: bool,
}

thread_local! {
    static TAPE: RefCell<Option<Tape>> = const { RefCell::new(None) };
}

/// An active recording on this thread; [`Recording::finish`] returns the tape. Dropping it
/// without finishing (an error in the forward pass) discards the tape.
pub(crate) struct Recording {
    previous: Option<Tape>,
    done: bool,
}

impl Recording {
    /// Starts recording; `own_conv` for a chunk pass (see [`Tape::own_conv`]).
    pub fn start(own_conv: bool) -> Self {
        let previous = TAPE.with(|t| t.borrow_mut().replace(Tape { own_conv, ..Tape::default() }));
        Self { previous, done: false }
    }

    pub fn finish(mut self) -> Tape {
        self.done = true;
        let prev = self.previous.take();
        TAPE.with(|t| std::mem::replace(&mut *t.borrow_mut(), prev)).unwrap_or_default()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if !self.done {
            let prev = self.previous.take();
            TAPE.with(|t| *t.borrow_mut() = prev);
        }
    }
}

/// Runs `f` with recording suspended (plain forward inside a recording, e.g. for the fallback).
pub(crate) fn suspended<T>(f: impl FnOnce() -> T) -> T {
    let saved = TAPE.with(|t| t.borrow_mut().take());
    let out = f();
    TAPE.with(|t| *t.borrow_mut() = saved);
    out
}

/// Whether a chunk pass is recording on this thread (see [`Tape::own_conv`]).
pub(crate) fn own_conv() -> bool {
    TAPE.with(|t| t.borrow().as_ref().is_some_and(|t| t.own_conv))
}

/// Whether a recording is active on this thread.
pub fn is_recording() -> bool {
    TAPE.with(|t| t.borrow().is_some())
}

/// Called by tapped layers: records and returns `out + probe` when recording, else `out`.
pub(crate) fn tap(
    name: &str,
    kind: RecKind,
    input: &Tensor,
    out: Tensor,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
) -> candle::Result<Tensor> {
    if !is_recording() {
        return Ok(out);
    }
    let probe = Var::zeros(out.shape(), out.dtype(), out.device())?;
    let out = out.add(probe.as_tensor())?;
    let rec = Record {
        name: name.to_string(),
        kind,
        input: input.detach(),
        probe,
        weight: weight.cloned(),
        bias: bias.cloned(),
    };
    TAPE.with(|t| {
        if let Some(tape) = t.borrow_mut().as_mut() {
            tape.records.push(rec);
        }
    });
    Ok(out)
}

/// Declares `t` a buffer (not a trainable parameter) of the current recording.
pub(crate) fn buffer(t: &Tensor) {
    TAPE.with(|tp| {
        if let Some(tape) = tp.borrow_mut().as_mut() {
            tape.buffers.push(t.id());
        }
    });
}
