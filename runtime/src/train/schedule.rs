//! Learning-rate schedules: linear warmup, then cosine decay, warmup-stable-decay, or constant.
//! The horizon is the recipe's planned `steps`, so a run stopped early and resumed follows the
//! same curve as an uninterrupted one.

use dsv3c_spec::config::{Schedule, ScheduleKind};

/// Learning rate at optimizer step `step` (1-based) of a run planned for `total` steps.
pub fn lr(s: &Schedule, peak: f64, step: u64, total: u64) -> f64 {
    let min = peak * s.min_lr_ratio;
    if step <= s.warmup_steps && s.warmup_steps > 0 {
        return peak * step as f64 / s.warmup_steps as f64;
    }
    let span = total.saturating_sub(s.warmup_steps).max(1) as f64;
    let t = ((step.saturating_sub(s.warmup_steps)) as f64 / span).min(1.0);
    match s.kind {
        ScheduleKind::Constant => peak,
        ScheduleKind::Cosine => min + (peak - min) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
        ScheduleKind::Wsd => {
            let decay_start = 1.0 - s.decay_fraction;
            if t <= decay_start || s.decay_fraction == 0.0 {
                peak
            } else {
                peak - (peak - min) * (t - decay_start) / s.decay_fraction
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay_to_the_floor() {
        let s = Schedule { kind: ScheduleKind::Cosine, warmup_steps: 10, min_lr_ratio: 0.1, decay_fraction: 0.2 };
        assert_eq!(lr(&s, 1.0, 5, 100), 0.5);
        assert_eq!(lr(&s, 1.0, 10, 100), 1.0);
        assert!((lr(&s, 1.0, 100, 100) - 0.1).abs() < 1e-12);
        assert!((lr(&s, 1.0, 500, 100) - 0.1).abs() < 1e-12, "past the horizon the floor holds");
        let w = Schedule { kind: ScheduleKind::Wsd, ..s };
        assert_eq!(lr(&w, 1.0, 50, 100), 1.0);
        assert!((lr(&w, 1.0, 100, 100) - 0.1).abs() < 1e-12);
        assert!(lr(&w, 1.0, 95, 100) < 1.0 && lr(&w, 1.0, 95, 100) > 0.1);
    }

    /// Interior steps against the closed forms, worked by hand: peak 2.0, floor 0.2 (ratio 0.1),
    /// warmup 10 of 110 steps, so after warmup t = (step − 10) / 100.
    #[test]
    fn interior_steps_follow_the_closed_forms() {
        let s = Schedule { kind: ScheduleKind::Cosine, warmup_steps: 10, min_lr_ratio: 0.1, decay_fraction: 0.2 };
        let at = |s: &Schedule, step| lr(s, 2.0, step, 110);
        // Warmup: 2.0 · 3/10.
        assert!((at(&s, 3) - 0.6).abs() < 1e-12);
        // Cosine at t = 0.25: 0.2 + 1.8 · (1 + cos(π/4)) / 2 = 0.2 + 0.9 · 1.70710678 = 1.73639610;
        // a linear decay would give 0.2 + 1.8 · 0.75 = 1.55.
        assert!((at(&s, 35) - 1.736_396_103_067_893).abs() < 1e-12, "{}", at(&s, 35));
        // t = 0.5: 0.2 + 0.9 = 1.1; t = 0.75: 0.2 + 0.9 · (1 − cos(π/4)) = 0.46360390.
        assert!((at(&s, 60) - 1.1).abs() < 1e-12);
        assert!((at(&s, 85) - 0.463_603_896_932_107).abs() < 1e-12, "{}", at(&s, 85));
        // WSD with the last 20% decaying linearly: flat at t = 0.8 (step 90), then at t = 0.9
        // (step 100) halfway down: 2.0 − 1.8 · 0.5 = 1.1; at t = 0.95: 2.0 − 1.8 · 0.75 = 0.65.
        let w = Schedule { kind: ScheduleKind::Wsd, ..s };
        assert_eq!(at(&w, 90), 2.0);
        assert!((at(&w, 100) - 1.1).abs() < 1e-12);
        assert!((at(&w, 105) - 0.65).abs() < 1e-12);
        // Constant: the peak after warmup, at any step, even past the horizon.
        let c = Schedule { kind: ScheduleKind::Constant, ..s };
        assert!((at(&c, 5) - 1.0).abs() < 1e-12);
        for step in [11, 60, 110, 500] {
            assert_eq!(at(&c, step), 2.0);
        }
    }
}
