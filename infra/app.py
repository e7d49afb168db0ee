"""The CDK app: `make synth` (python infra/app.py) or `cdk synth|deploy` (cdk.json's "app").

Builds the coupon service stack from cdk.json's context, checks it with cdk-nag's
AwsSolutionsChecks and writes CloudFormation to cdk.out/. Needs no AWS credentials and no
Docker: the dependencies layer is built by pip (pass `-c aws:cdk:bundling-stacks=[]` to the
CDK CLI, or set COUPONS_SKIP_BUNDLING=1 here, to leave it unbuilt).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # coupons_infra without an install

from coupons_infra.stack import build_app


def main() -> int:
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    root = Path(__file__).resolve().parents[1]
    context: dict[str, object] = {}
    if os.environ.get("COUPONS_SKIP_BUNDLING"):
        print("COUPONS_SKIP_BUNDLING is set: the dependencies layer is not built (synth only, not for deploy)",
              file=sys.stderr)
        context["aws:cdk:bundling-stacks"] = []
    app = build_app(context=context, outdir=str(root / "cdk.out"))
    try:
        app.synth()
    except Exception as error:  # cdk-nag findings fail validation; the report says which
        print(f"synthesis failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
