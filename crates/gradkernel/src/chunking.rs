//! Chunk sizing under the memory budget (the general engine's example blocks).

use crate::error::{GradKernelError, Result};

/// How examples are chunked: `chunk` examples per block, whether every chunk's factors stay
/// cached, and the bytes left for block temporaries.
pub(crate) struct Chunking {
    pub chunk: usize,
    pub cache: bool,
    pub avail: usize,
}

/// The largest chunk whose passes (`pass_pe` bytes per example), factors (`factor_pe`) and block
/// temporaries fit what `budget` leaves after the `outputs` bytes of part Grams (`outputs_what`
/// names them in the error). Used by the general engine.
#[allow(clippy::too_many_arguments)]
pub(crate) fn size_chunks(
    budget: usize,
    outputs: usize,
    outputs_what: &str,
    n_total: usize,
    n_max: usize,
    pass_pe: usize,
    factor_pe: usize,
    ae: usize,
) -> Result<Chunking> {
    if outputs >= budget {
        return Err(GradKernelError::OverBudget { what: outputs_what.into(), needed: outputs, budget });
    }
    let avail_all = budget - outputs;
    // Block temporaries: two products, their elementwise product, the running sum, the host copy.
    let per_c2 = ae * 6;
    let fits = |c: usize, cache: bool| {
        let (avail, factors) =
            if cache { (avail_all.saturating_sub(n_total * factor_pe), 0) } else { (avail_all, 2 * c * factor_pe) };
        c * pass_pe + factors + c * c * per_c2 <= avail
    };
    // Keep every chunk's factors when they take at most half the budget and one example still fits.
    let cache = n_total.saturating_mul(factor_pe) <= avail_all / 2 && fits(1, true);
    let mut c = n_max.max(1);
    while c > 1 && !fits(c, cache) {
        c = (c * 9 / 10).min(c - 1);
    }
    if !fits(c, cache) {
        return Err(GradKernelError::OverBudget {
            what: "one example's forward/backward pass and factors".into(),
            needed: pass_pe + 2 * factor_pe + per_c2 + outputs,
            budget,
        });
    }
    let avail = if cache { avail_all - n_total * factor_pe } else { avail_all };
    Ok(Chunking { chunk: c, cache, avail })
}
