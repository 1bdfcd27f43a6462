//! The backend suite (`runtime::backend_suite`) on the CPU reference backend.

dsv3c_runtime::backend_suite!(cpu, |p| Some(dsv3c_runtime::cpu::Cpu::new(p)));
