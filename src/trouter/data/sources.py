"""Where every public data file comes from, pinned to a commit, with its SHA-256 and size.

``trouter data fetch`` downloads these files into the data directory, laid out as the
loaders read them (``routerbench/``, ``llmrouter/``, ``routerdc_split2/``, ``routellm/``,
``questions/``); a ``--mirror`` serves the same layout. The checksums were computed from
unchanged copies of the releases; a file whose bytes differ is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trouter.config import DataNotFoundError

RDC = "shuhao02/RouterDC"  # RouterBench slice and RouterDC split 2 (NeurIPS 2024)
LLMR = "ulab-uiuc/LLMRouter"
RLLM = "lm-sys/RouteLLM"
GSM = "openai/grade-school-math"  # MIT
HE = "openai/human-eval"  # MIT


@dataclass(frozen=True)
class DataFile:
    """One file of the data directory: its relative path and its pinned public origin."""

    path: str
    repo: str
    commit: str
    remote_path: str
    sha256: str
    size: int

    @property
    def url(self) -> str:
        return f"https://raw.githubusercontent.com/{self.repo}/{self.commit}/{self.remote_path}"

    def mirror_url(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.path}"


def _f(path: str, repo: str, commit: str, remote: str, sha256: str, size: int) -> DataFile:
    return DataFile(path, repo, commit, remote, sha256, size)


FILES: tuple[DataFile, ...] = (
    _f(
        "llmrouter/dcrouter_test.json",
        LLMR,
        "17e4c6926999cacfc1828a400667027c2027228e",
        "data/dcrouter_preprocessed/test.json",
        "fbb6d3e3f62c7018e5446d3154cc05812d3124381f774738e9f0bac5bff79c79",
        361757,
    ),
    _f(
        "llmrouter/dcrouter_train.json",
        LLMR,
        "17e4c6926999cacfc1828a400667027c2027228e",
        "data/dcrouter_preprocessed/train.json",
        "ad3ae70149998f02cbf0dd4557ccb6afcf365ac9391b7371329ffc22201e90e3",
        4018466,
    ),
    _f(
        "llmrouter/default_llm.json",
        LLMR,
        "ebdba864a97f116de148276559e473da63239a86",
        "llmrouter/data/example_data/llm_candidates/default_llm.json",
        "278f790564efd758ab28a9b6ce141d3fa057219de9bad40b31562c4286549552",
        6904,
    ),
    _f(
        "llmrouter/default_query_test.jsonl",
        LLMR,
        "6ec8c65640dd0a19447eb7208608fa54ca71628b",
        "llmrouter/data/example_data/defaul_query_data/default_query_test.jsonl",
        "0fdf4b4236fb81c1a673a01950fb974e02599c83164b0e7832888aefaa490e27",
        405273,
    ),
    _f(
        "llmrouter/default_query_train.jsonl",
        LLMR,
        "6ec8c65640dd0a19447eb7208608fa54ca71628b",
        "llmrouter/data/example_data/defaul_query_data/default_query_train.jsonl",
        "f1b2e3281dc3f9e082016812e1a778ca30e9828c7e58fa0a9f6dc52350ad4b8c",
        3519579,
    ),
    _f(
        "questions/HumanEval.jsonl.gz",
        HE,
        "12d15a0314d6c92137516de971881a3a4ee51efb",
        "data/HumanEval.jsonl.gz",
        "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
        44877,
    ),
    _f(
        "questions/gsm8k_test.jsonl",
        GSM,
        "b52325ad96ea38979fdc222e881ff5d105f95295",
        "grade_school_math/data/test.jsonl",
        "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
        749738,
    ),
    _f(
        "questions/gsm8k_train.jsonl",
        GSM,
        "2a85729b06459fd3eef7f8b9d0d0a845d0790570",
        "grade_school_math/data/train.jsonl",
        "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
        4166206,
    ),
    _f(
        "routellm/gsm8k_responses.csv",
        RLLM,
        "c2ad69388688796a93a4424e7a0dc9072ea372d2",
        "routellm/evals/gsm8k/gsm8k_responses.csv",
        "1f38ed03db354a020f71e92022383dc3cf37bbf2694dea4daaeea7b6c43fe57b",
        1291062,
    ),
    _f(
        "routellm/mmlu/mmlu_abstract_algebra.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_abstract_algebra.csv",
        "67e564eea42e71fbfcaf616972df952c316e5538376da1c16d691177458b96b9",
        20003,
    ),
    _f(
        "routellm/mmlu/mmlu_anatomy.csv",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mmlu/responses/mmlu_anatomy.csv",
        "53ebea8257805eeecc25713728264b8235cffad7b720962a3eafc92fd27ef537",
        33922,
    ),
    _f(
        "routellm/mmlu/mmlu_astronomy.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_astronomy.csv",
        "49915ece9dfe8aadbd351f221ada2ea86b6f832ce49fa64d1622a0f066c19794",
        47647,
    ),
    _f(
        "routellm/mmlu/mmlu_business_ethics.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_business_ethics.csv",
        "13a45bed754ffe8f0e7f0348e69085c648a1ae0e91aa76cd5e6906fa45f7ec8e",
        33854,
    ),
    _f(
        "routellm/mmlu/mmlu_clinical_knowledge.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_clinical_knowledge.csv",
        "5ea37709bfbad4df7a3fcbd8973413f7645a2adfef9772490f09d3f293ffe882",
        64226,
    ),
    _f(
        "routellm/mmlu/mmlu_college_biology.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_college_biology.csv",
        "c38620db5b9f6f1b0fde7bc8d8299b8e2305c4dacbb1567c904cd51618d627d5",
        49612,
    ),
    _f(
        "routellm/mmlu/mmlu_college_chemistry.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_college_chemistry.csv",
        "78ca6ba22ff25c8fdb93e1c6e84384e72522106c73ed5ee9fed620928ce395ce",
        25362,
    ),
    _f(
        "routellm/mmlu/mmlu_college_computer_science.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_college_computer_science.csv",
        "8a7b2a87a36b428c9d1a8f12ce3b01cf7920f0a7146d6f8a111da6749c332da3",
        43299,
    ),
    _f(
        "routellm/mmlu/mmlu_college_mathematics.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_college_mathematics.csv",
        "3f22f42779c48509c66e21d7d1fc3054eb0256c1b5b772bb6d9a3af1b253238b",
        25385,
    ),
    _f(
        "routellm/mmlu/mmlu_college_medicine.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_college_medicine.csv",
        "63d71d29e630fc6538e1705a51f4267bdbbdea0fa7ee85056ad7d6f8f10d3987",
        83407,
    ),
    _f(
        "routellm/mmlu/mmlu_college_physics.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_college_physics.csv",
        "8162a0660d4ef7b963088e0a176d4b8630096127a0d0b5ed003f649cbad34455",
        30851,
    ),
    _f(
        "routellm/mmlu/mmlu_computer_security.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_computer_security.csv",
        "26446faf7460f03aa2d82a05c170faedb5cbf6d7bdda133b1146229107097d1c",
        27712,
    ),
    _f(
        "routellm/mmlu/mmlu_conceptual_physics.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_conceptual_physics.csv",
        "ea40473704b64cb60d564ffe91962848ec6fc3106b40089d08cebc98d5c7226d",
        42034,
    ),
    _f(
        "routellm/mmlu/mmlu_econometrics.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_econometrics.csv",
        "927b4d877cec8697f3b8378bb7e7c7a279babaea2edacf350ea50908701907b9",
        47278,
    ),
    _f(
        "routellm/mmlu/mmlu_electrical_engineering.csv",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mmlu/responses/mmlu_electrical_engineering.csv",
        "de2fb7c2e9addb4808f5b3f7c79efbfdfb86216235bb7dc28ab70bc53664f11e",
        26003,
    ),
    _f(
        "routellm/mmlu/mmlu_elementary_mathematics.csv",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mmlu/responses/mmlu_elementary_mathematics.csv",
        "88697ff0d238b5852c7a959379dc8b0b45c3554ed4b2ee7cbb7ffc34e06c7cf5",
        72419,
    ),
    _f(
        "routellm/mmlu/mmlu_formal_logic.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_formal_logic.csv",
        "094a462626468569ad595c03e66e73a299188cfa175248b499dba94e005506e6",
        50588,
    ),
    _f(
        "routellm/mmlu/mmlu_global_facts.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_global_facts.csv",
        "6f75ddf7d6eb94ac0471529a85ff7f8b738c9f4055185b3114eed26393222d06",
        19055,
    ),
    _f(
        "routellm/mmlu/mmlu_high_school_biology.csv",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mmlu/responses/mmlu_high_school_biology.csv",
        "444982fc2c750ab8cbc6942a0c0267040aa5023c1d2364247d20e2a28b4e325d",
        111417,
    ),
    _f(
        "routellm/mmlu/mmlu_high_school_chemistry.csv",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mmlu/responses/mmlu_high_school_chemistry.csv",
        "ae5e62479365dcd056354c568f60da65b1df9f1de57dda3953a8e9933a6f12e4",
        59694,
    ),
    _f(
        "routellm/mmlu/mmlu_high_school_computer_science.csv",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mmlu/responses/mmlu_high_school_computer_science.csv",
        "d156d9448a6e899f7f976a0afac148a928bf709a2baa573f0c407854a25bdb11",
        45133,
    ),
    _f(
        "routellm/mmlu/mmlu_high_school_european_history.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_high_school_european_history.csv",
        "c64afd6c5e30ef0cd5c10beab961ac05e7ba55d6b48cd93bf6ad0a45f90515bf",
        271527,
    ),
    _f(
        "routellm/mmlu/mmlu_high_school_geography.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_high_school_geography.csv",
        "21b12044be4a6b9813880ad46372006dc0846e7f85fa46883bb73dbd90fba30a",
        43125,
    ),
    _f(
        "routellm/mmlu/mmlu_high_school_government_and_politics.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_high_school_government_and_politics.csv",
        "2791689acc61775a5857f4f3a5fd248d30552553c3a96f6ee63dc28285437259",
        67164,
    ),
    _f(
        "routellm/mmlu/mmlu_high_school_macroeconomics.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_high_school_macroeconomics.csv",
        "73b931a2a06ba74a5c9f1e005d45a25004e36be5d075d98f8ebcf89b3fda367b",
        119896,
    ),
    _f(
        "routellm/mmlu/mmlu_high_school_mathematics.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_high_school_mathematics.csv",
        "151b2a736981b7b20f3bad99de6a573e4692d68cf87020e943b601b70bb37390",
        56703,
    ),
    _f(
        "routellm/mmlu/mmlu_high_school_microeconomics.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_high_school_microeconomics.csv",
        "f7ea151efb4c9d96374db3358ac7e97e4d8349e26715f61dac98bc9d854ca046",
        77019,
    ),
    _f(
        "routellm/mmlu/mmlu_high_school_physics.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_high_school_physics.csv",
        "1e2103fc8f7f1cfac7c00952b26db2418acab092486af78a9c51c551ae2ff9be",
        60489,
    ),
    _f(
        "routellm/mmlu/mmlu_high_school_psychology.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_high_school_psychology.csv",
        "d11604f2c7a2425258d5b9a285ef71737c011cc3a91456890f088a0ee4c55212",
        162370,
    ),
    _f(
        "routellm/mmlu/mmlu_high_school_statistics.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_high_school_statistics.csv",
        "de6642bcd93d7a80e7bbd73d987a44d67b6e537b47749ddc518122fd582703bb",
        112040,
    ),
    _f(
        "routellm/mmlu/mmlu_high_school_us_history.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_high_school_us_history.csv",
        "a71186d143363e203b2f216d78c9d21f10cca51de455ef176c9c01b77f546592",
        298464,
    ),
    _f(
        "routellm/mmlu/mmlu_high_school_world_history.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_high_school_world_history.csv",
        "e9c52305977dc37b3e48eee727ad933b2d24d96ca3a06aec865a8900b1e87d2c",
        380424,
    ),
    _f(
        "routellm/mmlu/mmlu_human_aging.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_human_aging.csv",
        "0d6c4109b4f61f138781ce50bbc60ff2e90dd451694d3926a088be5a5bd88aa8",
        47361,
    ),
    _f(
        "routellm/mmlu/mmlu_human_sexuality.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_human_sexuality.csv",
        "20916037e3012731883f926738daf47ed994f74ba25518fdb7f0df72a81143fd",
        32866,
    ),
    _f(
        "routellm/mmlu/mmlu_international_law.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_international_law.csv",
        "e389b886e3e1570bfdf798f6f56dc3c675350200c5baf0f41a0766294ff312eb",
        54224,
    ),
    _f(
        "routellm/mmlu/mmlu_jurisprudence.csv",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mmlu/responses/mmlu_jurisprudence.csv",
        "7e94c3849231be7b2654db11e44ee51531f8474e300fe83b1e05438df3038f0b",
        34614,
    ),
    _f(
        "routellm/mmlu/mmlu_logical_fallacies.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_logical_fallacies.csv",
        "fa2d94cd2e901621aaebd0a7e64560b5dbbe4249086795398533eed2561c0c1e",
        51102,
    ),
    _f(
        "routellm/mmlu/mmlu_machine_learning.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_machine_learning.csv",
        "9301e928481be6e20b3541e1ac112b25a4a71338b21592978c0d219cb6240020",
        34575,
    ),
    _f(
        "routellm/mmlu/mmlu_management.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_management.csv",
        "a00b12ab0265918f9335a85ce02303ddaea0491a7b099f88a05986eeac4aa4fb",
        20594,
    ),
    _f(
        "routellm/mmlu/mmlu_marketing.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_marketing.csv",
        "3ee0b6560ebe0eb4f14ce63227d6f6ec8cb8b6e57e345eae9460be742672f36c",
        64281,
    ),
    _f(
        "routellm/mmlu/mmlu_medical_genetics.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_medical_genetics.csv",
        "7c830f87dcbc0029137b3400cf361931831cb57dda55717a64e72ad74663d5df",
        21444,
    ),
    _f(
        "routellm/mmlu/mmlu_miscellaneous.csv",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mmlu/responses/mmlu_miscellaneous.csv",
        "c2e1a5b0394a8429f55b6340e1865166ac17ec6b3571523005e413b3b2843b9f",
        151860,
    ),
    _f(
        "routellm/mmlu/mmlu_moral_disputes.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_moral_disputes.csv",
        "8b2b973b1987b724f39fd10970604d7f1150747a0db9ce766c193bd978c9d0c4",
        109870,
    ),
    _f(
        "routellm/mmlu/mmlu_moral_scenarios.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_moral_scenarios.csv",
        "78ded6fdca1cd0d5c4ed16a5ed4aebf2e98401b9c00b20e565e6cce5bf1153c7",
        379235,
    ),
    _f(
        "routellm/mmlu/mmlu_nutrition.csv",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mmlu/responses/mmlu_nutrition.csv",
        "ba197fbf4b6c5034414d66ea7747211056cf5f709f83d919d2d856245720cc51",
        94113,
    ),
    _f(
        "routellm/mmlu/mmlu_philosophy.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_philosophy.csv",
        "2f30ad01ab529ddea00dff4ff87e950fef838a78754c94f6884120628a7d0591",
        81836,
    ),
    _f(
        "routellm/mmlu/mmlu_prehistory.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_prehistory.csv",
        "afc816d4b78814627bae9b8c3730a9bb72bd958ff6259fd36c981777cfe83753",
        91362,
    ),
    _f(
        "routellm/mmlu/mmlu_professional_accounting.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_professional_accounting.csv",
        "fe5ee976a625832ecf624086103619523d063a3a728c60681b6a53c55b638a37",
        126233,
    ),
    _f(
        "routellm/mmlu/mmlu_professional_law.csv",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mmlu/responses/mmlu_professional_law.csv",
        "60a4308df4f481ff8840590b29061835207b50a9f06a9fc68baf12b114f7e2e0",
        1902501,
    ),
    _f(
        "routellm/mmlu/mmlu_professional_medicine.csv",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mmlu/responses/mmlu_professional_medicine.csv",
        "6fda30b523e4e2ce8b1f18e871a0722190a4ac81ec377a75fbba4a63e0b510f7",
        219104,
    ),
    _f(
        "routellm/mmlu/mmlu_professional_psychology.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_professional_psychology.csv",
        "bfb3a7fb653e2b195d3fa258894af64d3f1c3dbd4059c1e0feb728131d20f9b3",
        229411,
    ),
    _f(
        "routellm/mmlu/mmlu_public_relations.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_public_relations.csv",
        "2196279ea2535fbda62509c3156209b764459a3d515a9ba84b69cf16bb4c27d0",
        29421,
    ),
    _f(
        "routellm/mmlu/mmlu_security_studies.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_security_studies.csv",
        "1354bb17649f95b7dd8ef3179e22329abe6bef84e639d63370ae9e80b2509905",
        206239,
    ),
    _f(
        "routellm/mmlu/mmlu_sociology.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_sociology.csv",
        "903ba6259b13f2877607abef22b7b19cb575104268d4ced615e3129d3caafb47",
        67343,
    ),
    _f(
        "routellm/mmlu/mmlu_us_foreign_policy.csv",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mmlu/responses/mmlu_us_foreign_policy.csv",
        "f1c1d266753a3f161e2018c16c6948fb78c7f5e506a10b4fc0441049962a6c69",
        29024,
    ),
    _f(
        "routellm/mmlu/mmlu_virology.csv",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mmlu/responses/mmlu_virology.csv",
        "d525f1ba88982befd42140e73822fe940e73db82bbdcdd569d95f26c3dd41e68",
        39794,
    ),
    _f(
        "routellm/mmlu/mmlu_world_religions.csv",
        RLLM,
        "c5e4ef6ccba7c2da2c6a380242dfe1e390e209b1",
        "routellm/evals/mmlu/responses/mmlu_world_religions.csv",
        "49dc00d44e069ecaac6a7f7e2188f4a8bce5df56ee91bb15f55519d07f64af8e",
        26268,
    ),
    _f(
        "routellm/mt_bench_contaminated_prompts.jsonl",
        RLLM,
        "2c3f0472cf968ff98966dc14928e2482fcfcc26a",
        "routellm/evals/mt_bench/contaminated_prompts.jsonl",
        "a77356ecd7cab6ba9bfb6d7b91c512f83aee4f82309934387a6cdfb915882109",
        2694,
    ),
    _f(
        "routellm/mt_bench_judgements.jsonl",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mt_bench/judgements.jsonl",
        "ffd1d44e7af835c810d35ebd420b88a47acd8aac850f46b149b9889964ae4478",
        1417551,
    ),
    _f(
        "routellm/mt_bench_question.jsonl",
        RLLM,
        "fbc851126beb19d6385d98c934554614135baa69",
        "routellm/evals/mt_bench/question.jsonl",
        "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
        48929,
    ),
    _f(
        "routerbench/arc_challenge_test.csv",
        RDC,
        "1963d6874b69c94309ea37a34d7d4cd6f527e7c5",
        "datasets/routerbench_zs/arc_challenge_test.csv",
        "7bffb55faca2e1f9d19f7197c652884780a1e0f7fe14bad5b2b1c6afbe7a6769",
        1102387,
    ),
    _f(
        "routerbench/arc_challenge_train.csv",
        RDC,
        "1963d6874b69c94309ea37a34d7d4cd6f527e7c5",
        "datasets/routerbench_zs/arc_challenge_train.csv",
        "59e044850520be06f74dd9766b9ab4621d783f7fa5269d7dda118b9abb115d78",
        2579191,
    ),
    _f(
        "routerbench/mbpp_test.csv",
        RDC,
        "1963d6874b69c94309ea37a34d7d4cd6f527e7c5",
        "datasets/routerbench_zs/mbpp_test.csv",
        "156fb843b706b765162d74f5fc4928322be5041791b45bd3e1bd732d998c4032",
        1322291,
    ),
    _f(
        "routerbench/mbpp_train.csv",
        RDC,
        "1963d6874b69c94309ea37a34d7d4cd6f527e7c5",
        "datasets/routerbench_zs/mbpp_train.csv",
        "2a985adc3a3016b5ae4d62229722cdff9ece58aa1338206a6b12e4957304452b",
        3128944,
    ),
    _f(
        "routerbench/winograde_test.csv",
        RDC,
        "1963d6874b69c94309ea37a34d7d4cd6f527e7c5",
        "datasets/routerbench_zs/winograde_test.csv",
        "de7c8689d4b682c860b660988808ee2e40366b12076811e7891081facec4a2e1",
        696034,
    ),
    _f(
        "routerbench/winograde_train.csv",
        RDC,
        "1963d6874b69c94309ea37a34d7d4cd6f527e7c5",
        "datasets/routerbench_zs/winograde_train.csv",
        "f6d54caab59bebb9facf3407c515a07a20faf4e75c639b7e91988ceaf312906a",
        1623934,
    ),
    _f(
        "routerdc_split2/MATH_prealgebra.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/MATH_prealgebra.json",
        "3cb750eaa93bd9989babca64b22e92ad51b0b5c30f6ee11dc539fb949c9cf5be",
        441513,
    ),
    _f(
        "routerdc_split2/arc_challenge_test.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/arc_challenge_test.json",
        "7588fd22f8d7e9adb9ec6ff435a0d3612a56b3192dc3f9ace358c2468a10b1f3",
        180874,
    ),
    _f(
        "routerdc_split2/arc_challenge_train.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/arc_challenge_train.json",
        "5ec50e9cd61caf0e3f116b48d00996a3d88ee52b3a0f04797cdfde8e21f8b610",
        439134,
    ),
    _f(
        "routerdc_split2/arc_easy_test.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/arc_easy_test.json",
        "f8ba3041a394d865aeca8a5554c63f302649563f9cac9bbee8512b2d686269c7",
        380217,
    ),
    _f(
        "routerdc_split2/arc_easy_train.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/arc_easy_train.json",
        "25bc2be5a33afbdf950466ad34f388b6ede63e59d7139a916c0dd7be649ccfae",
        888903,
    ),
    _f(
        "routerdc_split2/ceval.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/ceval.json",
        "b2f8105774193d869fa78c53894aa4118391eaed6bb0810f03f5fec76fd82323",
        1181875,
    ),
    _f(
        "routerdc_split2/cmmlu_test.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/cmmlu_test.json",
        "10f175ac68f5163a9572d1d0e203415846264dceb9f56b444a654fff79e19843",
        2764779,
    ),
    _f(
        "routerdc_split2/cmmlu_train.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/cmmlu_train.json",
        "6cc4cdba7f5bf9ca6cbb303bac87efded70d3807c17ecbe54424a74d9410b11e",
        1611405,
    ),
    _f(
        "routerdc_split2/gsm8k-test.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/gsm8k-test.json",
        "237ccfe4a613a523e48ac92709ddc1a541674c332f9064899cce2cb1dafac3c9",
        741554,
    ),
    _f(
        "routerdc_split2/gsm8k-train.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/gsm8k-train.json",
        "63528cfd7b1860f03bae35e16d4964fe61d4abd3133386c92b22f433a4d4cd75",
        557478,
    ),
    _f(
        "routerdc_split2/humaneval_test.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/humaneval_test.json",
        "3744fba4a7953206858f601e61b05c1551ca2fbcfac6b14b46fd19e8735f5f68",
        42909,
    ),
    _f(
        "routerdc_split2/humaneval_train.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/humaneval_train.json",
        "c98f4160c135bfb2e6ee21bed16e23a8e5700148c3ea6f49092ce64c5a8d8de0",
        87643,
    ),
    _f(
        "routerdc_split2/javascript.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/javascript.json",
        "bfaad2257e7b0de6d4bd6c204e05e791998f8875bb157dde1aea39817c60376b",
        124626,
    ),
    _f(
        "routerdc_split2/mbpp.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/mbpp.json",
        "17f2c23297234421e3e683ed5fc18d696cacb80a2d1e7a931ca12fcf52a2f9e7",
        242373,
    ),
    _f(
        "routerdc_split2/mmlu_test.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/mmlu_test.json",
        "e560163c00f717a23da5781cf7b76a4050abed0cd75b2244df3fc23d46ea379b",
        3578099,
    ),
    _f(
        "routerdc_split2/mmlu_train.json",
        RDC,
        "dadb87299f65fb8f1c1dddc30967a3907d0132dd",
        "datasets/split2_model7/mmlu_train.json",
        "f07315933421304572fde4a2751c131757a7a3913ad5dad302390d4ee00e5d7d",
        1705188,
    ),
)
BY_PATH = {f.path: f for f in FILES}

#: What each fetchable name needs: the suites of ``load_suite`` plus the question sets.
SUITE_PREFIXES: dict[str, tuple[str, ...]] = {
    "routerbench": ("routerbench/",),
    "llmrouter": ("llmrouter/",),
    "routerdc": ("routerdc_split2/",),
    "routellm-gsm8k": ("routellm/gsm8k_responses.csv",),
    "routellm-mmlu": ("routellm/mmlu/",),
    "routellm-mtbench": ("routellm/mt_bench_",),
    "questions": ("questions/",),
}


def suite_files(name: str) -> list[DataFile]:
    """The files ``name`` needs; ``KeyError`` naming the choices for an unknown name."""
    if name not in SUITE_PREFIXES:
        raise KeyError(f"unknown data set {name!r}; choose from {', '.join(SUITE_PREFIXES)}")
    return [f for f in FILES if f.path.startswith(SUITE_PREFIXES[name])]


def suite_of(path: str) -> str:
    """The fetchable name that brings ``path`` (for error messages)."""
    for name, prefixes in SUITE_PREFIXES.items():
        if path.startswith(prefixes):
            return name
    raise KeyError(path)


def missing_files(root: Path, name: str) -> list[DataFile]:
    """Files of data set ``name`` that are absent under ``root`` (existence only)."""
    return [f for f in suite_files(name) if not (root / f.path).is_file()]


def require_data(name: str, root: Path) -> None:
    """Raise :class:`DataNotFoundError` naming the first missing file of ``name`` and the
    command that fetches it."""
    missing = missing_files(root, name)
    if missing:
        more = f" (and {len(missing) - 1} more of its files)" if len(missing) > 1 else ""
        raise DataNotFoundError(
            f"{name} needs the data file {root / missing[0].path}, which is missing{more}. "
            f"Fetch the public release with `trouter data fetch {name}` (it downloads into "
            f"{root}; set TROUTER_DATA_DIR to use another folder)."
        )
