use dsv3c_runtime::cpu::Cpu;

#[test]
fn tiny_runs_forward_and_backward() {
    let spec = dsv3c_spec::canonical::get("tiny").unwrap();
    let p = dsv3c_codegen::compile(&spec, 2, 16).unwrap();
    eprintln!(
        "params {} act {} kernels {} fwd {} bwd {}",
        p.param_len,
        p.act_len,
        p.kernels.len(),
        p.forward.len(),
        p.backward.len()
    );
    let mut cpu = Cpu::new(&p);
    dsv3c_runtime::init::init_params(&p, 1, &mut cpu.params);
    let toks: Vec<f32> = (0..32).map(|i| ((i * 7919) % 50000) as f32).collect();
    cpu.write(p.io.tokens, &toks);
    cpu.run(&p, &p.forward);
    let loss = cpu.read(p.io.loss)[0];
    let main = cpu.read(p.io.main_loss)[0];
    eprintln!("loss {loss} main {main} mtp {:?}", p.io.mtp_losses.iter().map(|s| cpu.read(*s)[0]).collect::<Vec<_>>());
    cpu.run(&p, &p.backward);
    let g2: f64 = cpu.grads.iter().map(|g| (*g as f64).powi(2)).sum();
    eprintln!("grad norm {}", g2.sqrt());
    assert!((main - (50304f32).ln()).abs() < 0.5);
    assert!(g2.is_finite() && g2 > 0.0);
}
