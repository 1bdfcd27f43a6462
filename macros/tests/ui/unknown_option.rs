mod unknown {
    dsv3c_macros::model!("../../../spec/tiny.yaml", batch = 2, sequence = 8);
}

fn main() {}
