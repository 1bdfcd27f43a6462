mod empty {
    dsv3c_macros::model!("../../../spec/tiny.yaml", batch = 0, seq = 8);
}

fn main() {}
