/* Subcommand registry. Each subcommand lives in src/cli/cmd_<name>.c and
 * defines `int cmd_<name>(int argc, char **argv)` (argv[0] is the subcommand
 * name) returning the process exit code. Add one DN_CMD line per command.
 * The CLI is the only place allowed to call exit(). */
#ifndef DN_CLI_COMMANDS_H
#define DN_CLI_COMMANDS_H

#define DN_COMMANDS(X) \
    X(convert, "convert torchvision .pth to a defectnet safetensors model (class names, metadata)") \
    X(calibrate, "fit unknown-input detection (KNN/energy/relative Mahalanobis) into a model; measure it against unknown images") \
    X(explain, "Grad-CAM heatmap overlays (PNG) of a model's evidence for images") \
    X(info, "describe a model: architecture, classes, preprocessing, sha256, metadata") \
    X(download, "download torchvision ResNet-18 weights, sha256-verified") \
    X(export, "export the reviewed images of serve's review queue as an ImageFolder + manifest for training") \
    X(compare, "a candidate model against the live one on labelled images (McNemar, per class), or serve --shadow's log") \
    X(eval, "evaluate a model on labelled images: metrics, calibration (temperature, threshold), JSON/HTML report") \
    X(version, "print version and CPU features") \
    X(quantize, "opt a model into bf16 inference with an accuracy guard (agreement, per-class change)") \
    X(report, "manufacturing report (CSV/JSON/HTML) from the prediction store") \
    X(rules, "check an action rules file; replay predictions through it in dry-run") \
    X(serve, "HTTP prediction service with durable store, folder watch and actions") \
    X(predict, "classify image files/folders with a model (table, jsonl, csv)") \
    X(synth, "write a synthetic defect-image dataset (ImageFolder of PNGs)") \
    X(train, "fine-tune a ResNet on a folder of defect images (head-only fast path, stages, early stopping)")

#define DN_DECL(name, help) int cmd_##name(int argc, char **argv);
DN_COMMANDS(DN_DECL)
#undef DN_DECL

#endif
