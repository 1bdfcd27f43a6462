mod long {
    dsv3c_macros::model!("../../../spec/tiny.yaml", seq = 100000);
}

fn main() {}
