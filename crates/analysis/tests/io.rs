//! Writers: atomic, round-trippable, settings recorded.

use ndarray::array;
use stiff_analysis::*;

#[test]
fn json_round_trip_and_csv_with_meta() {
    let dir = tempfile::tempdir().unwrap();
    // g = (1,0), (2,0) class 0; (0,3), (-1,1) class 1; plus a zero gradient in class 1.
    let k = array![
        [1.0, 2.0, 0.0, -1.0, 0.0],
        [2.0, 4.0, 0.0, -2.0, 0.0],
        [0.0, 0.0, 9.0, 3.0, 0.0],
        [-1.0, -2.0, 3.0, 2.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0]
    ];
    let allow = StiffnessSettings::default().with_allow_empty_classes(true);
    // Class 2 empty: its cells serialise as null.
    let c = class_stiffness(k.view(), &[0, 0, 1, 1, 1], 3, &allow).unwrap();
    let p = dir.path().join("class.json");
    write_json(&p, &c).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains("\"schema_version\": 1"));
    assert!(text.contains("null"));
    let back: ClassStiffness = serde_json::from_str(&text).unwrap();
    assert_eq!(back, c);

    let p = dir.path().join("class.csv");
    write_class_csv(&p, &c).unwrap();
    let csv = std::fs::read_to_string(&p).unwrap();
    assert_eq!(csv.lines().count(), 1 + 9);
    assert!(csv.lines().nth(1).unwrap().starts_with("0,0,1,2,1,2"));
    let meta = std::fs::read_to_string(dir.path().join("class.csv.meta.json")).unwrap();
    assert!(meta.contains("zero_tol"));
    // Only the three files: no temporary left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
}

#[test]
fn curve_json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let k = array![[1.0f32, 0.5, -0.2], [0.5, 1.0, 0.1], [-0.2, 0.1, 1.0]];
    let x = array![[1.0f32, 0.0], [1.0, 1.0], [0.0, 1.0]];
    let curve = distance_curve(
        k.view(),
        x.view(),
        &[0, 1, 1],
        PairFilter::All,
        &BinSpec::default(),
        &StiffnessSettings::default(),
    )
    .unwrap()
    .with_space("input");
    let p = dir.path().join("curve.json");
    write_json(&p, &curve).unwrap();
    let back: DistanceCurve = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(back, curve);
    let p = dir.path().join("curve.csv");
    write_curve_csv(&p, &curve).unwrap();
    assert_eq!(std::fs::read_to_string(&p).unwrap().lines().count(), 41);
    assert!(dir.path().join("curve.csv.meta.json").exists());
}
