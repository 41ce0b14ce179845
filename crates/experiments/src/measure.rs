//! One stiffness measurement of a model snapshot on a fixed set of examples: the Gram matrix of
//! per-example gradients (gradient kernel), class stiffness with bootstrap intervals, and
//! stiffness-vs-distance curves in input space and in every hidden layer's representation.
//!
//! The network is a preset [`Model`] (the figures; [`measure`]) or any [`Subject`]: a user's
//! `nn.Sequential` checkpoint as a [`SpecModel`] with a label-based loss ([`measure_subject`]),
//! which gets the same measurement through the same gradient kernel.

use std::time::Instant;

use candle::{DType, Device, Tensor};
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};
use stiff_analysis::{
    bootstrap_within_between, class_stiffness, distance_curves, BinSpec, Crossing, DistanceCurve, FitOver, PairFilter,
    StiffnessKind, StiffnessSettings, WithinBetweenCi,
};
use stiff_gradkernel::{Loss, Network};
use stiff_models::{LayerSpec, Model, SpecModel};

use crate::{ExperimentError, Result};

/// The network whose per-example gradients are measured.
#[derive(Clone, Copy)]
pub enum Subject<'a> {
    /// A preset (`fc6`, `cnn5`, ...) with the summed cross-entropy; [`stiff_gradkernel::gram`]
    /// (its CPU kernels where they apply, else the general engine).
    Preset(&'a Model),
    /// Any `nn.Sequential` spec with a label-based loss (cross-entropy or MSE on one-hot labels);
    /// [`stiff_gradkernel::gram_net`]. Hidden representations for the distance curves are the
    /// inputs of every `Linear`/`Conv2d` after the first (the same spaces as a preset's).
    Spec {
        /// The network (eval mode).
        model: &'a SpecModel,
        /// The per-example loss: [`Loss::CrossEntropy`] or [`Loss::MseOneHot`].
        loss: &'a Loss,
    },
    /// Any other network (an ONNX graph, a user's candle module) with a label-based loss;
    /// [`stiff_gradkernel::gram_net`]. The caller says which hidden representations the distance
    /// curves use.
    Network {
        /// The network (eval mode) and its representation spaces.
        net: &'a dyn Represented,
        /// The per-example loss: [`Loss::CrossEntropy`] or [`Loss::MseOneHot`].
        loss: &'a Loss,
    },
}

/// A network that says which hidden representations the distance curves use.
pub trait Represented: Network {
    /// Hidden representations `(N, features)` of prepared inputs `x`, in forward order.
    fn representations(&self, x: &Tensor) -> candle::Result<Vec<Tensor>>;
}

impl std::fmt::Debug for Subject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Preset(m) => f.debug_tuple("Preset").field(m).finish(),
            Subject::Spec { model, loss } => f.debug_struct("Spec").field("model", model).field("loss", loss).finish(),
            Subject::Network { net, loss, .. } => {
                f.debug_struct("Network").field("parameters", &net.parameters().len()).field("loss", loss).finish()
            }
        }
    }
}

impl Subject<'_> {
    fn device(&self) -> Device {
        match self {
            Subject::Preset(m) => m.device().clone(),
            Subject::Spec { model, .. } => model.device(),
            Subject::Network { net, .. } => {
                net.parameters().first().map(|(_, v)| v.device().clone()).unwrap_or(Device::Cpu)
            }
        }
    }

    /// K `(N, N)` of the per-example loss gradients.
    fn gram(&self, x: &Tensor, y: &Tensor, opts: &stiff_gradkernel::GramOptions) -> Result<Tensor> {
        Ok(match self {
            Subject::Preset(m) => stiff_gradkernel::gram(m, x, y, opts)?.k,
            Subject::Spec { model, loss } => {
                label_loss(loss)?;
                stiff_gradkernel::gram_net(*model, x, y, loss, opts)?.k
            }
            Subject::Network { net, loss, .. } => {
                label_loss(loss)?;
                stiff_gradkernel::gram_net(*net, x, y, loss, opts)?.k
            }
        })
    }

    /// Hidden representations `(N, features)` in forward order.
    fn representations(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        Ok(match self {
            Subject::Preset(m) => m.forward_taps(x, false)?.representations,
            Subject::Spec { model, .. } => {
                let mut a = model.prepare_input(x)?;
                let mut reps = Vec::new();
                let mut seen_param = false;
                for (i, l) in model.spec().layers.iter().enumerate() {
                    if matches!(l, LayerSpec::Linear { .. } | LayerSpec::Conv2d { .. }) {
                        if seen_param {
                            reps.push(a.flatten_from(1)?.detach());
                        }
                        seen_param = true;
                    }
                    a = model.layer_forward(i, &a)?;
                }
                reps
            }
            Subject::Network { net, .. } => net.representations(&net.prepare(x)?)?,
        })
    }
}

/// A measurement compares labels: the loss must take them.
fn label_loss(loss: &Loss) -> Result<()> {
    if !matches!(loss, Loss::CrossEntropy | Loss::MseOneHot) {
        return Err(ExperimentError::InvalidArgument(format!(
            "loss {loss:?}: a measurement compares labels, so the loss must be cross-entropy or \
             mse-onehot (mse needs float targets; use `stiff gram --loss mse --inputs`)"
        )));
    }
    Ok(())
}

/// What to measure and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureSettings {
    /// Distance bins for the curves. Default: 40 bins over dot-product distance [0, 2].
    pub bins: BinSpec,
    /// Pairs entering the distance curves. Default: all pairs.
    pub pair_filter: PairFilter,
    /// Bootstrap replicates for the within/between intervals (0 = none). Default 200.
    pub bootstrap_reps: usize,
    /// Seed of the bootstrap resampling. Default 0.
    pub bootstrap_seed: u64,
    /// Whether to compute distance curves (costs one representation Gram per space). Default true.
    pub distance_curves: bool,
    /// Memory budget of the gradient kernel in bytes. Default 2 GiB.
    pub memory_budget_bytes: usize,
    /// Pairs a distance bin needs before a zero crossing may be read in it. Default
    /// [`stiff_analysis::DEFAULT_MIN_PAIRS`]. No serde default: records read without this
    /// rule do not parse as records of the current one.
    pub min_pairs: u64,
}

impl Default for MeasureSettings {
    fn default() -> Self {
        Self {
            bins: BinSpec::default(),
            pair_filter: PairFilter::All,
            bootstrap_reps: 200,
            bootstrap_seed: 0,
            distance_curves: true,
            memory_budget_bytes: 2 << 30,
            min_pairs: stiff_analysis::DEFAULT_MIN_PAIRS,
        }
    }
}

/// Within/between summary of one stiffness kind, with bootstrap intervals when requested.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindSummary {
    /// Mean over pairs of distinct examples of the same class.
    pub within: f64,
    /// Mean over pairs of examples of different classes.
    pub between: f64,
    /// Bootstrap intervals of both (resampling examples), when requested.
    pub ci: Option<WithinBetweenCi>,
}

/// Stiff domain sizes of one space read from its curve, by both methods and both kinds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpaceCurve {
    /// "input", "layer1", ... (1-based hidden layer index).
    pub space: String,
    /// v1: first zero crossing of the binned sign-stiffness curve.
    pub sign_first_crossing: Crossing,
    /// v3: zero of the least-squares line of sign stiffness vs distance, over the pairs of the
    /// initial decline (distance 0 to the bin with the lowest mean).
    pub sign_fit_crossing: Crossing,
    /// v1 read from the cosine-stiffness curve.
    pub cos_first_crossing: Crossing,
    /// v3 read from the cosine-stiffness curve.
    pub cos_fit_crossing: Crossing,
    /// The binned curve itself (pairs per bin, means of both kinds).
    pub curve: DistanceCurve,
}

/// Everything measured at one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// Examples measured.
    pub n: usize,
    /// Sign stiffness, within and between classes.
    pub sign: KindSummary,
    /// Cosine stiffness, within and between classes.
    pub cosine: KindSummary,
    /// Class matrices (rows: class of example 1, columns: class of example 2); `None` = no pairs.
    pub class_sign: Vec<Vec<Option<f64>>>,
    /// Same for cosine stiffness.
    pub class_cosine: Vec<Vec<Option<f64>>>,
    /// Examples whose loss gradient is exactly zero (their stiffness is undefined; excluded).
    pub zero_norm_examples: Vec<usize>,
    /// Distance curves and domain sizes, one per space (input, then hidden layers).
    pub curves: Vec<SpaceCurve>,
    /// Wall time of the Gram computation alone.
    pub gram_seconds: f64,
    /// Wall time of the analysis (class matrices, bootstrap, curves).
    pub analysis_seconds: f64,
}

impl Measurement {
    /// The summary of `kind`.
    pub fn kind(&self, kind: StiffnessKind) -> &KindSummary {
        match kind {
            StiffnessKind::Sign => &self.sign,
            StiffnessKind::Cosine => &self.cosine,
        }
    }
}

/// A candle matrix as an ndarray (f64 copy on the CPU).
pub fn to_array2_f64(t: &Tensor) -> Result<Array2<f64>> {
    let (r, c) = t.dims2()?;
    let v: Vec<f64> = t.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?;
    Ok(Array2::from_shape_vec((r, c), v).expect("shape matches element count"))
}

/// A candle tensor `(N, ...)` flattened to an `(N, D)` f32 ndarray on the CPU.
pub fn to_array2_f32(t: &Tensor) -> Result<Array2<f32>> {
    let n = t.dim(0)?;
    let flat = t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_from(1)?;
    let d = flat.dim(1)?;
    let v: Vec<f32> = flat.flatten_all()?.to_vec1()?;
    Ok(Array2::from_shape_vec((n, d), v).expect("shape matches element count"))
}

fn matrix_cells(m: &stiff_analysis::ClassMatrix) -> Vec<Vec<Option<f64>>> {
    (0..m.num_classes()).map(|a| (0..m.num_classes()).map(|b| m.get(a, b)).collect()).collect()
}

/// Measures stiffness of `model` on `(x, labels)`.
///
/// * `x`: `(N, C, H, W)` preprocessed inputs (on the model's device), `labels`: `(N)`.
pub fn measure(
    model: &Model,
    x: &Tensor,
    labels: &[u32],
    num_classes: usize,
    settings: &MeasureSettings,
) -> Result<Measurement> {
    measure_subject(&Subject::Preset(model), x, labels, num_classes, settings)
}

/// [`measure`] for any [`Subject`] (a preset, or a user's spec model and loss).
///
/// * `x`: `(N, ...)` preprocessed inputs in a shape the network accepts, `labels`: `(N)` in
///   `0..num_classes` (and below the network's output count).
pub fn measure_subject(
    subject: &Subject,
    x: &Tensor,
    labels: &[u32],
    num_classes: usize,
    settings: &MeasureSettings,
) -> Result<Measurement> {
    let y = Tensor::new(labels, &subject.device())?;
    let opts = stiff_gradkernel::GramOptions::default()
        .with_memory_budget_bytes(settings.memory_budget_bytes)
        .with_per_layer(false);
    let t0 = Instant::now();
    let k = to_array2_f64(&subject.gram(x, &y, &opts)?)?;
    let gram_seconds = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let s = StiffnessSettings::default();
    let cs = class_stiffness(k.view(), labels, num_classes, &s)?;
    let boot = if settings.bootstrap_reps >= 2 {
        Some(bootstrap_within_between(
            k.view(),
            labels,
            num_classes,
            &s,
            &stiff_analysis::BootstrapOptions::new(settings.bootstrap_reps, settings.bootstrap_seed, 0.95),
        )?)
    } else {
        None
    };
    let curves =
        if settings.distance_curves { space_curves(subject, x, k.view(), labels, settings, &s)? } else { vec![] };
    Ok(Measurement {
        n: labels.len(),
        sign: KindSummary { within: cs.sign.within, between: cs.sign.between, ci: boot.as_ref().map(|b| b.sign) },
        cosine: KindSummary {
            within: cs.cosine.within,
            between: cs.cosine.between,
            ci: boot.as_ref().map(|b| b.cosine),
        },
        class_sign: matrix_cells(&cs.sign),
        class_cosine: matrix_cells(&cs.cosine),
        zero_norm_examples: cs.zero_norm_examples.clone(),
        curves,
        gram_seconds,
        analysis_seconds: t1.elapsed().as_secs_f64(),
    })
}

/// Curves in input space and every hidden layer's representation (one forward pass).
fn space_curves(
    subject: &Subject,
    x: &Tensor,
    k: ArrayView2<f64>,
    labels: &[u32],
    settings: &MeasureSettings,
    s: &StiffnessSettings,
) -> Result<Vec<SpaceCurve>> {
    let mut reps = vec![("input".to_string(), to_array2_f32(x)?)];
    for (i, r) in subject.representations(x)?.iter().enumerate() {
        reps.push((format!("layer{}", i + 1), to_array2_f32(r)?));
    }
    let spaces: Vec<(&str, ArrayView2<f32>)> = reps.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
    let curves = distance_curves(k, &spaces, labels, settings.pair_filter, &settings.bins, s)?;
    Ok(curves
        .into_iter()
        .zip(&reps)
        .map(|(curve, (name, _))| SpaceCurve::read(name, curve, settings.min_pairs))
        .collect())
}

impl SpaceCurve {
    /// Reads both crossings of both kinds from `curve`, in bins with at least `min_pairs` pairs.
    pub fn read(space: &str, curve: DistanceCurve, min_pairs: u64) -> Self {
        Self {
            space: space.to_string(),
            sign_first_crossing: curve.first_zero_crossing_min(StiffnessKind::Sign, min_pairs),
            sign_fit_crossing: curve.linear_fit_crossing_min(StiffnessKind::Sign, FitOver::PairsToMinimum, min_pairs),
            cos_first_crossing: curve.first_zero_crossing_min(StiffnessKind::Cosine, min_pairs),
            cos_fit_crossing: curve.linear_fit_crossing_min(StiffnessKind::Cosine, FitOver::PairsToMinimum, min_pairs),
            curve,
        }
    }

    /// Pools the curves of one space over several snapshots (bin moments summed) and reads the
    /// crossings of the pooled curve. `None` when `curves` is empty or their bins differ.
    pub fn pooled(curves: &[&SpaceCurve], min_pairs: u64) -> Option<Self> {
        let first = curves.first()?;
        let c0 = &first.curve;
        if curves.iter().any(|c| c.curve.bins != c0.bins || c.space != first.space) {
            return None;
        }
        let mut sm = c0.sign_moments.clone();
        let mut cm = c0.cos_moments.clone();
        for c in &curves[1..] {
            sm.iter_mut().zip(&c.curve.sign_moments).for_each(|(a, b)| a.merge(b));
            cm.iter_mut().zip(&c.curve.cos_moments).for_each(|(a, b)| a.merge(b));
        }
        let mut pooled = DistanceCurve::from_moments(c0.bins, c0.filter, c0.settings, sm, cm).ok()?;
        pooled.space = c0.space.clone();
        pooled.n = c0.n;
        pooled.out_of_range_pairs = curves.iter().map(|c| c.curve.out_of_range_pairs).sum();
        Some(Self::read(&first.space, pooled, min_pairs))
    }
}

/// The distance of a crossing, `None` when there is none (the reason stays in the record).
/// Why a crossing has no distance, for the `note` column (empty for a found crossing);
/// `digits`: decimals of the distance in "starts negative".
pub fn crossing_note(c: &Crossing, digits: usize) -> String {
    match c {
        Crossing::Found { .. } => String::new(),
        Crossing::StartsNegative { distance, value } => {
            format!("starts negative ({value:.3} at distance {distance:.digits$})")
        }
        Crossing::NeverCrosses { reason, .. } => format!("never crosses: {reason}"),
        Crossing::NoData { reason } => format!("no data: {reason}"),
    }
}

/// The crossing distance, if one was found.
pub fn crossing_distance(c: &Crossing) -> Option<f64> {
    match c {
        Crossing::Found { distance } => Some(*distance),
        _ => None,
    }
}
