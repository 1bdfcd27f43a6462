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
}
