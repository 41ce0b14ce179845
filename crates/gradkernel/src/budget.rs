//! Up-front memory accounting for [`crate::gram`] and [`crate::cross_gram`], and for callers
//! (like `stiff gram`) that hold more than the kernel returns.
//!
//! Everything a Gram computation holds is counted against one budget: `K` itself (`rows x cols`
//! in the accumulation dtype), the per-layer Grams when asked for (one more `K` per layer),
//! whatever the caller says it will add per entry of `K` (e.g. an f64 copy for analysis: 8 bytes),
//! and at least one example's forward/backward working memory. The check runs before any work and
//! a refusal says what would fit: the largest example count, whether dropping the per-layer Grams
//! is enough, and the smallest budget that would do.
//!
//! All functions here are pure (sizes in, sizes out) and use checked `u64` arithmetic: a
//! requested size that overflows is an error, never a wrapped-around small number.

use serde::Serialize;
use stiff_models::{Layer, Model};

use crate::error::GradKernelError;
use crate::inputs::acc_dtype;
use crate::options::GramOptions;

/// What the budget check needs to know about a model.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelSizes {
    /// `(input elements, output elements)` of each layer for one example, in forward order.
    pub layer_io: Vec<(u64, u64)>,
    /// Bytes per scalar of the Gram entries (4 for f32, 8 for f64 accumulation).
    pub elem_bytes: u64,
}

impl ModelSizes {
    /// Layer sizes of `model`, with the entry size `opts` implies (f64 with `accumulate_f64` or
    /// an f64 model, else the model's dtype).
    pub fn of(model: &Model, opts: &GramOptions) -> Self {
        Self::of_layers(model.layers(), opts)
    }

    /// Sizes of a chain of layers (see [`crate::Network::chain`]); empty: no layers.
    pub fn of_layers(layers: &[Layer], opts: &GramOptions) -> Self {
        let layer_io = layers
            .iter()
            .map(|l| (l.in_dims.iter().product::<usize>() as u64, l.out_dims.iter().product::<usize>() as u64))
            .collect();
        let dtype = layers.first().map_or(candle::DType::F32, |l| l.weight.dtype());
        Self { layer_io, elem_bytes: acc_dtype(dtype, opts).size_in_bytes() as u64 }
    }

    /// A lower bound on the working memory of one example's forward/backward pass: inputs,
    /// pre-activations, activations, deltas and autograd temporaries, each in the entry dtype.
    pub fn min_working_bytes(&self) -> Option<u64> {
        self.layer_io.iter().try_fold(0u64, |acc, &(i, o)| {
            let per = o.checked_mul(4)?.checked_add(i)?.checked_mul(2)?.checked_mul(self.elem_bytes)?;
            acc.checked_add(per)
        })
    }
}

/// One Gram computation to account for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct GramRequest {
    /// Rows of `K` (examples of set a, or all examples for a square Gram).
    pub rows: u64,
    /// Columns of `K` (equal to `rows` for a square Gram).
    pub cols: u64,
    /// Whether `rows == cols` always (a square Gram): then "what would fit" shrinks both.
    pub square: bool,
    /// Whether the per-layer Grams are kept.
    pub per_layer: bool,
    /// Bytes the caller holds per entry of `K` on top of the kernel's outputs (default 0).
    pub caller_bytes_per_entry: u64,
    /// The budget in bytes.
    pub budget_bytes: u64,
}

impl GramRequest {
    /// A square Gram of `n` examples.
    pub fn square(n: u64, per_layer: bool, budget_bytes: u64) -> Self {
        Self { rows: n, cols: n, square: true, per_layer, caller_bytes_per_entry: 0, budget_bytes }
    }

    /// A `rows x cols` cross Gram.
    pub fn cross(rows: u64, cols: u64, per_layer: bool, budget_bytes: u64) -> Self {
        Self { rows, cols, square: false, per_layer, caller_bytes_per_entry: 0, budget_bytes }
    }

    /// The same request with `bytes` more held by the caller per entry of `K`.
    pub fn with_caller_bytes_per_entry(mut self, bytes: u64) -> Self {
        self.caller_bytes_per_entry = bytes;
        self
    }
}

/// Bytes a Gram computation holds, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Footprint {
    /// `K`.
    pub k_bytes: u64,
    /// The per-layer Grams (0 when not kept).
    pub per_layer_bytes: u64,
    /// What the caller holds besides (e.g. an f64 copy of `K` for analysis).
    pub caller_bytes: u64,
    /// Minimum working memory (one example's pass); chunks grow into whatever budget is left.
    pub min_working_bytes: u64,
    /// The sum of the above.
    pub total_bytes: u64,
}

/// Why a request cannot be served within its budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BudgetError {
    /// The sizes themselves overflow 64-bit arithmetic.
    #[error("a {rows} x {cols} Gram matrix is too large to even count its bytes")]
    Overflow {
        /// Requested rows.
        rows: u64,
        /// Requested columns.
        cols: u64,
    },
    /// The request needs more than the budget.
    #[error("{}", over_budget_message(.request, .needed, .largest, .largest_without_per_layer, .min_budget_bytes))]
    OverBudget {
        /// The request that did not fit.
        request: GramRequest,
        /// What it would hold.
        needed: Footprint,
        /// The largest example count that fits with the same settings (rows for a cross Gram;
        /// 0 when not even one example fits).
        largest: u64,
        /// With per-layer Grams requested: the largest count that fits without them.
        largest_without_per_layer: Option<u64>,
        /// The smallest budget that serves the request as it is.
        min_budget_bytes: u64,
    },
}

fn mib(bytes: u64) -> String {
    if bytes < 100 << 10 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

fn over_budget_message(
    r: &GramRequest,
    f: &Footprint,
    largest: &u64,
    without: &Option<u64>,
    min_budget: &u64,
) -> String {
    let (largest, without, min_budget) = (*largest, *without, *min_budget);
    let mut parts = vec![format!("K {}", mib(f.k_bytes))];
    if f.per_layer_bytes > 0 {
        parts.push(format!("per-layer Grams {}", mib(f.per_layer_bytes)));
    }
    if f.caller_bytes > 0 {
        parts.push(format!("analysis copy {}", mib(f.caller_bytes)));
    }
    parts.push(format!("working memory at least {}", mib(f.min_working_bytes)));
    let what = if r.square { format!("N = {}", r.rows) } else { format!("{} x {}", r.rows, r.cols) };
    let unit = if r.square { "N" } else { "rows" };
    let mut msg = format!(
        "the Gram matrix of {what} examples needs {} ({}), over the memory budget of {}. What would fit: \
         at most {unit} = {largest} with these settings",
        mib(f.total_bytes),
        parts.join(", "),
        mib(r.budget_bytes)
    );
    if let Some(w) = without {
        msg.push_str(&format!("; {unit} = {w} without the per-layer Grams"));
    }
    msg.push_str(&format!("; or a budget of at least {}", mib(min_budget)));
    msg
}

/// What `req` holds on a model of sizes `m`; `None` when the byte counts overflow.
pub fn footprint(m: &ModelSizes, req: &GramRequest) -> Option<Footprint> {
    let entries = req.rows.checked_mul(req.cols)?;
    let k_bytes = entries.checked_mul(m.elem_bytes)?;
    let per_layer_bytes = if req.per_layer { k_bytes.checked_mul(m.layer_io.len() as u64)? } else { 0 };
    let caller_bytes = entries.checked_mul(req.caller_bytes_per_entry)?;
    let min_working_bytes = m.min_working_bytes()?;
    let total_bytes =
        k_bytes.checked_add(per_layer_bytes)?.checked_add(caller_bytes)?.checked_add(min_working_bytes)?;
    Some(Footprint { k_bytes, per_layer_bytes, caller_bytes, min_working_bytes, total_bytes })
}

/// The largest count (rows and cols for a square request, rows otherwise) that fits.
fn largest_fitting(m: &ModelSizes, req: &GramRequest) -> u64 {
    let fits = |n: u64| {
        let r = GramRequest { rows: n, cols: if req.square { n } else { req.cols }, ..*req };
        footprint(m, &r).is_some_and(|f| f.total_bytes <= req.budget_bytes)
    };
    let (mut lo, mut hi) = (0u64, req.rows);
    // Invariant: fits(lo) or lo == 0; !fits(hi + 1) is unknown only above the request.
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// Checks `req` against its budget before any work; the error says what would fit.
pub fn check(m: &ModelSizes, req: &GramRequest) -> Result<Footprint, BudgetError> {
    let f = footprint(m, req).ok_or(BudgetError::Overflow { rows: req.rows, cols: req.cols })?;
    if f.total_bytes <= req.budget_bytes {
        return Ok(f);
    }
    let without = req.per_layer.then(|| largest_fitting(m, &GramRequest { per_layer: false, ..*req }));
    Err(BudgetError::OverBudget {
        request: *req,
        needed: f,
        largest: largest_fitting(m, req),
        largest_without_per_layer: without,
        min_budget_bytes: f.total_bytes,
    })
}

/// The check [`crate::gram`] / [`crate::cross_gram`] run first: `K` and the per-layer Grams must
/// fit in `opts.memory_budget_bytes` with room for one example's pass. Returns the options the
/// chunk planner should use: the same, with `K`'s bytes taken out of the budget (the planner
/// counts the per-layer Grams and the working memory itself).
pub(crate) fn working_options(
    layers: &[Layer],
    rows: usize,
    cols: usize,
    square: bool,
    opts: &GramOptions,
) -> Result<GramOptions, GradKernelError> {
    let m = ModelSizes::of_layers(layers, opts);
    let budget = opts.memory_budget_bytes as u64;
    let req = GramRequest {
        rows: rows as u64,
        cols: cols as u64,
        square,
        per_layer: opts.per_layer,
        caller_bytes_per_entry: 0,
        budget_bytes: budget,
    };
    let f = check(&m, &req).map_err(|e| {
        let needed = match &e {
            BudgetError::OverBudget { needed, .. } => usize::try_from(needed.total_bytes).unwrap_or(usize::MAX),
            BudgetError::Overflow { .. } => usize::MAX,
        };
        GradKernelError::OverBudget { what: e.to_string(), needed, budget: opts.memory_budget_bytes }
    })?;
    let mut out = opts.clone();
    out.memory_budget_bytes = usize::try_from(budget - f.k_bytes).unwrap_or(usize::MAX);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlp() -> ModelSizes {
        // fc-like: 784 -> 100 -> 10, f32.
        ModelSizes { layer_io: vec![(784, 100), (100, 10)], elem_bytes: 4 }
    }

    #[test]
    fn footprint_counts_every_part() {
        let m = mlp();
        let f = footprint(&m, &GramRequest::square(1000, true, 0).with_caller_bytes_per_entry(8)).unwrap();
        // Hand count: K = 1000^2 * 4; two layers; f64 copy 8 per entry; pass 2*4*((784+400)+(100+40)).
        assert_eq!(f.k_bytes, 4_000_000);
        assert_eq!(f.per_layer_bytes, 8_000_000);
        assert_eq!(f.caller_bytes, 8_000_000);
        assert_eq!(f.min_working_bytes, 8 * (1184 + 140));
        assert_eq!(f.total_bytes, 20_000_000 + 8 * 1324);
    }

    #[test]
    fn refusal_says_what_fits_and_the_answer_is_tight() {
        let m = mlp();
        let budget = 2u64 << 30;
        let req = GramRequest::square(30_000, true, budget).with_caller_bytes_per_entry(8);
        let BudgetError::OverBudget { largest, largest_without_per_layer, min_budget_bytes, .. } =
            check(&m, &req).unwrap_err()
        else {
            panic!("expected OverBudget")
        };
        let at = |n: u64, per_layer: bool| {
            footprint(&m, &GramRequest { rows: n, cols: n, per_layer, ..req }).unwrap().total_bytes
        };
        assert!(at(largest, true) <= budget && at(largest + 1, true) > budget);
        let w = largest_without_per_layer.unwrap();
        assert!(at(w, false) <= budget && at(w + 1, false) > budget);
        assert_eq!(min_budget_bytes, at(30_000, true));
        let msg = check(&m, &req).unwrap_err().to_string();
        assert!(msg.contains(&format!("N = {largest}")) && msg.contains("without the per-layer"), "{msg}");
    }

    #[test]
    fn huge_sizes_are_an_error_not_a_wrap() {
        let m = mlp();
        let req = GramRequest::square(u64::MAX / 2, false, u64::MAX);
        assert!(matches!(check(&m, &req), Err(BudgetError::Overflow { .. })));
    }

    #[test]
    fn cross_gram_shrinks_rows_only() {
        let m = mlp();
        let req = GramRequest::cross(100_000, 1000, false, 100 << 20);
        let BudgetError::OverBudget { largest, .. } = check(&m, &req).unwrap_err() else { panic!() };
        let f = |r: u64| footprint(&m, &GramRequest { rows: r, ..req }).unwrap().total_bytes;
        assert!(f(largest) <= 100 << 20 && f(largest + 1) > 100 << 20);
    }
}
