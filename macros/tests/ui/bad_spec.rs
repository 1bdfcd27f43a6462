mod bad {
    dsv3c_macros::model!("bad_spec.yaml");
}

fn main() {}
