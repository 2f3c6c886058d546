import json

from conftest import SPIRAL_MLP


def test_check_loss_json_is_one_object(cli, write_recipe):
    result = cli("check-loss", write_recipe(SPIRAL_MLP), "--json")
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.stdout)
    assert verdict["command"] == "check-loss" and verdict["status"] == "pass"
