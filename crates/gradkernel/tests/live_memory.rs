//! The general engine stays within its memory budget: the bytes actually allocated while a Gram
//! is computed (counted by this test binary's allocator, so independent of the planner's own
//! estimate) never exceed `memory_budget_bytes`. cnn4's materialised conv route is the case that
//! went over: its chunks were sized from a per-example pass estimate about 1.5x too small, so
//! `stiff gram --preset cnn4 --subset 8000 --budget-mb 512` peaked far above 512 MiB.
//!
//! One test in this binary: the counter sees every allocation of the process.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stiff_gradkernel::{gram, GramOptions, Method};
use stiff_models::{InputShape, Model, ModelConfig, Preset};

/// Live heap bytes and their high-water mark.
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is forwarded to the system allocator with the same arguments; the counters
// are only arithmetic on the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const MIB: usize = 1 << 20;

#[test]
fn materialised_conv_route_stays_within_its_budget() {
    let cfg = ModelConfig::preset(Preset::Cnn4, InputShape::new(1, 28, 28), 10);
    let model = Model::new(&cfg, 1, DType::F32, &Device::Cpu).unwrap();
    let n = 240;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let v: Vec<f32> = (0..n * 784).map(|_| rng.random_range(-1.0..1.0)).collect();
    let x = Tensor::from_vec(v, (n, 1, 28, 28), &Device::Cpu).unwrap();
    let y = Tensor::from_vec((0..n as u32).map(|i| i % 10).collect::<Vec<_>>(), n, &Device::Cpu).unwrap();
    // One-time allocations (thread pools, the libraries' per-thread scratch) belong to the
    // program, not to a Gram: a first small call makes them before anything is measured.
    let warm = GramOptions::default().with_method(Method::Materialised).with_per_layer(false);
    gram(&model, &x.narrow(0, 0, 8).unwrap(), &y.narrow(0, 0, 8).unwrap(), &warm).unwrap();
    // 16 MiB: factors recomputed per block; 32 MiB: every chunk's factors cached.
    for budget_mib in [16, 32] {
        let opts = GramOptions::default()
            .with_memory_budget_bytes(budget_mib * MIB)
            .with_method(Method::Materialised)
            .with_per_layer(false);
        let before = LIVE.load(Ordering::SeqCst);
        PEAK.store(before, Ordering::SeqCst);
        let r = gram(&model, &x, &y, &opts).unwrap();
        let used = PEAK.load(Ordering::SeqCst) - before;
        // The premise: the budget, not N, sized the chunks, and the conv layers took the
        // materialised route.
        assert!(r.chunk < n, "budget {budget_mib} MiB: chunk {} is all of N", r.chunk);
        assert!(r.routes.iter().any(|u| u.form == stiff_gradkernel::LayerForm::Materialised), "{:?}", r.routes);
        assert!(
            used <= budget_mib * MIB,
            "budget {budget_mib} MiB: {:.1} MiB allocated at the peak (chunk {})",
            used as f64 / MIB as f64,
            r.chunk
        );
        drop(r);
    }
}
