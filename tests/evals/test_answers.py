"""GSM8K and MATH answer extraction, normalisation and equivalence."""

import time

import pytest

from demix_jax.evals import answers
from demix_jax.evals import symbolic


@pytest.mark.parametrize(
    "completion, want",
    [
        (" 16 - 3 - 4 = 9 eggs. 9 * 2 = $18. So the answer is 18.", "18"),
        ("So the answer is $1,450,000.", "1450000"),
        ("The answer is 7 apples, not 10 apples.", "7"),
        ("The answer is -3.", "-3"),
        ("She pays 2.50 + 2 = 4.50 dollars", "4.5"),
        ("Total: 18.00", "18"),
        ("work <<3*4=12>>12\n#### 12", "12"),
        ("first 5 then #### 1,000 and 7", "1000"),
        ("no marker: 3 cats and 40 dogs", "40"),
        ("The answer is unclear, maybe 6", "6"),
    ],
)
def test_gsm8k_extract(completion, want):
  assert answers.gsm8k_extract(completion) == want


def test_gsm8k_match_and_misses():
  assert answers.gsm8k_match("So the answer is 2125.", "2,125")
  assert answers.gsm8k_match("So the answer is 18.0", "18")
  assert not answers.gsm8k_match("So the answer is 17.", "18")
  assert not answers.gsm8k_match("I do not know.", "18")
  assert answers.gsm8k_extract("no digits at all") is None
  # The marker wins over a later number.
  assert not answers.gsm8k_match("So the answer is 9. Check: 10", "10")


@pytest.mark.parametrize(
    "text, want",
    [
        (r"so $\boxed{\frac{a}{b}}$", r"\frac{a}{b}"),
        (
            r"\boxed{1} then \boxed{\left( 3, \frac{\pi}{2} \right)}.",
            r"\left( 3, \frac{\pi}{2} \right)",
        ),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"the answer is \boxed 5.", "5"),
        (r"\fbox{x^{2}}", "x^{2}"),
        (r"\boxed{unclosed", None),
        ("no box", None),
    ],
)
def test_last_boxed(text, want):
  assert answers.last_boxed(text) == want


def test_math_extract_final_answer_fallback():
  text = "So it is 4.\nFinal Answer: The final answer is $\\frac{1}{2}$. I hope it is correct."
  assert answers.math_extract(text) == "\\frac{1}{2}"
  assert answers.math_extract("The final answer is 12") == "12"
  assert answers.math_extract("nothing here") is None
  # A box wins over the sentence.
  assert answers.math_extract("\\boxed{3}. The final answer is 4.") == "3"


@pytest.mark.parametrize(
    "raw, want",
    [
        (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
        (r"\dfrac{14}{3}", r"\frac{14}{3}"),
        (r"\tfrac12", r"\frac{1}{2}"),
        (r"\frac9{19}", r"\frac{9}{19}"),
        (r"\sqrt2", r"\sqrt{2}"),
        ("10,000", "10000"),
        ("1,-2", "1,-2"),
        (r"5\text{ cm}^2", "5"),
        (r"90^\circ", "90"),
        (r"90^{\circ}", "90"),
        (r"x = 5", "5"),
        (r"\$18.00", "18"),
        (r"50\%", "50"),
        (r"\text{Evelyn}", "Evelyn"),
        (r"\mbox{(C)}", "(C)"),
        ("3.", "3"),
        (r"2m+1", "2m+1"),  # a variable, not metres
        # The data's answer field: "ft" deleted from \left and \infty.
        (r"\le(3,\frac{\pi}{2}\right)", r"(3,\frac{\pi}{2})"),
        (r"(-\iny,0]", r"(-\infty,0]"),
        (r"\frac{9}{{}19}", r"\frac{9}{19}"),
        (r"\cotx", r"\cot x"),
        (r"\sinh x", r"\sinh x"),
        (r"x \cdot x", r"x\cdot x"),
    ],
)
def test_math_normalize(raw, want):
  assert answers.math_normalize(raw) == want


@pytest.fixture(scope="module")
def checker():
  c = symbolic.SymbolicChecker()
  yield c
  c.close()


@pytest.mark.parametrize(
    "a, b, want",
    [
        ("0.5", r"\frac{1}{2}", True),
        (r"\frac{\sqrt{2}}{2}", r"\frac{1}{\sqrt2}", True),
        ("2x+2", "2(x+1)", True),
        ("2x+3", "2(x+1)", False),
        (r"(3,\frac{\pi}{2})", r"\left(3, \dfrac{\pi}{2}\right)", True),
        (r"(1,2)", r"[1,2]", False),  # interval brackets must agree
        (r"(1,2)", r"(2,1)", False),
        (r"6-5i", r"-5i+6", True),
        (r"x^2", r"x\cdot x", True),
        ("Evelyn", "Evelyn", True),
        ("52_8", "42", False),
    ],
)
def test_math_equiv(a, b, want, checker):
  assert answers.math_equiv(a, b, checker=checker) is want


def test_symbolic_timeout_counts_as_not_equal_and_recovers(checker):
  t0 = time.monotonic()
  assert not answers.math_equiv("10^{10^{10}}", "3", 1.0, checker)
  assert time.monotonic() - t0 < 30
  assert checker.timeouts >= 1
  # The worker was restarted and still answers.
  assert answers.math_equiv("0.25", r"\frac14", checker=checker)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        r"\text{open}('x')",
        "a.b",
        "(1).real",
        r"\unknowncommand{1}",
        "x_1",
        "exit()",
    ],
)
def test_to_sympy_source_rejects_unsafe_or_unknown(text):
  assert symbolic.to_sympy_source(answers.math_normalize(text)) is None


def test_to_sympy_source_converts():
  assert symbolic.to_sympy_source(r"\frac{1}{2}") == "((1)/(2))"
  assert symbolic.to_sympy_source(r"\sqrt[3]{8}") == "((8)**(1/(3)))"
  assert symbolic.to_sympy_source(r"2\pi r") == "2 pi r"
  assert symbolic.to_sympy_source("ab+0.5") == "(a*b)+0.5"
  assert symbolic.to_sympy_source("2i") == "2I"
