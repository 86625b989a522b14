"""The console's two languages: every user-facing string in English and 中文, and numbers, money
and times formatted the way each locale writes them.

A message is looked up by key; a missing key is a programming error and raises `KeyError` at
render time (tests render every page in both languages, so none can slip through).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"
CST = timedelta(hours=8)  # China Standard Time: what the console shows

MESSAGES: dict[str, tuple[str, str]] = {  # key: (English, 中文)
    "app": ("suanli compute network", "算力网络"),
    "nav.overview": ("Network", "全网概览"),
    "nav.sites": ("Sites", "站点"),
    "nav.tasks": ("Tasks", "任务"),
    "nav.new": ("New task", "提交任务"),
    "nav.money": ("Money", "账务"),
    "nav.twin": ("Digital twin", "数字孪生"),
    "nav.forecasts": ("Forecasts", "负载预测"),
    "nav.signout": ("Sign out", "退出"),
    "nav.language": ("中文", "English"),  # the button names the other language
    "nav.main": ("Main", "主导航"),
    "signin.title": ("Sign in", "登录"),
    "signin.token": ("Access token", "访问令牌"),
    "signin.help": (
        "Paste the token you were given (suanli admin token create prints one).",
        "粘贴您的访问令牌（由 suanli admin token create 生成）。",
    ),
    "signin.submit": ("Sign in", "登录"),
    "signin.bad": ("That token is not valid.", "令牌无效。"),
    "signin.agent": (
        "An agent token cannot sign in to the console; use the provider's own token.",
        "代理令牌不能登录控制台；请使用提供方本人的令牌。",
    ),
    "csrf.refused": (
        "This request was refused: it came from another site, or its form is out of date. "
        "Reload the page and try again.",
        "请求被拒绝：它来自其他网站，或表单已过期。请刷新页面后重试。",
    ),
    "role.operator": ("operator", "运营方"),
    "role.provider": ("provider", "提供方"),
    "role.consumer": ("consumer", "使用方"),
    "tasks.title": ("Your tasks", "我的任务"),
    "tasks.all": ("All tasks", "全部任务"),
    "tasks.empty": ("No tasks yet.", "暂无任务。"),
    "tasks.filter": ("Filter", "筛选"),
    "tasks.state": ("State", "状态"),
    "tasks.any": ("any", "全部"),
    "tasks.name": ("Name starts with", "名称前缀"),
    "task.id": ("Task", "任务"),
    "task.name": ("Name", "名称"),
    "task.created": ("Created", "创建时间"),
    "task.site": ("Site", "站点"),
    "task.pool": ("Pool", "资源池"),
    "task.devices": ("Devices", "设备数"),
    "task.timeline": ("Timeline", "状态时间线"),
    "task.placement": ("Placement and why", "调度结果与原因"),
    "task.runner_up": ("Runner-up", "次优选择"),
    "task.objective": ("Objective", "目标分项"),
    "task.waiting": ("Waiting", "等待中"),
    "task.log": ("Output (live)", "输出（实时）"),
    "task.cost": ("Cost", "费用"),
    "task.carbon": ("Carbon", "碳排放"),
    "task.usage": ("Usage", "用量"),
    "task.energy.modelled": ("Energy, modelled (TDP × PUE)", "能耗（模型估算，含 PUE）"),
    "task.energy.measured": ("Energy, measured (accelerators)", "能耗（加速卡实测）"),
    "task.cancel": ("Cancel task", "取消任务"),
    "task.exit": ("Exit code", "退出码"),
    "task.none": ("none yet", "暂无"),
    "new.title": ("Submit a task", "提交任务"),
    "new.command": ("Command", "命令"),
    "new.command_help": ("Run by sh -c on the chosen site.", "在所选站点以 sh -c 执行。"),
    "new.name": ("Name", "名称"),
    "new.devices": ("Devices", "设备数"),
    "new.kind": ("Device kind", "设备类型"),
    "new.duration": ("Estimated seconds", "预计时长（秒）"),
    "new.policy": ("Policy", "调度策略"),
    "new.origin": ("Where you are", "所在地"),
    "new.quote": ("Get a quote", "获取报价"),
    "quote.title": ("Quote", "报价"),
    "quote.option": ("Option", "方案"),
    "quote.price": ("Price (at most)", "价格（上限）"),
    "quote.duration": ("Duration", "时长"),
    "quote.starts": ("Starts", "开始"),
    "quote.accept": ("Accept and run", "接受并运行"),
    "quote.none": ("No site can run this task now.", "当前没有站点可运行该任务。"),
    "money.title": ("Money", "账务"),
    "money.accounts": ("Accounts", "账户"),
    "money.account": ("Account", "账户"),
    "money.balance": ("Balance", "余额"),
    "money.statement": ("Statement", "对账单"),
    "money.csv": ("Download CSV", "下载 CSV"),
    "money.audit": ("Audit chain", "审计链"),
    "money.audit_ok": ("intact", "完整"),
    "money.audit_bad": ("broken at", "断裂于"),
    "money.when": ("When", "时间"),
    "money.amount": ("Amount", "金额"),
    "money.memo": ("Memo", "摘要"),
    "overview.title": ("The national compute network", "全国算力网络"),
    "sites.title": ("Sites and pools", "站点与资源池"),
    "twin.title": ("Digital twin", "数字孪生"),
    "error.title": ("Something is not right", "出错了"),
    "error.forbidden": ("Your role cannot open this page.", "您的角色无权访问此页面。"),
    "error.not_found": ("Not found.", "未找到。"),
    # payout statements (console/pages_statements.py)
    "stmt.title": ("Payout statements", "结算对账单"),
    "stmt.statement": ("Statement", "对账单"),
    "stmt.run": ("Payout run", "付款批次"),
    "stmt.all": ("All statements", "全部对账单"),
    "stmt.provider": ("Provider", "提供方"),
    "stmt.period": ("Period", "账期"),
    "stmt.cst": ("calendar month, China Standard Time", "自然月，北京时间"),
    "stmt.opening": ("Opening (unpaid)", "期初未付"),
    "stmt.earned": ("Earned in the period", "本期收入"),
    "stmt.paid": ("Paid by this run", "本次付款"),
    "stmt.closing": ("Closing (unpaid)", "期末未付"),
    "stmt.orders": ("Orders", "订单数"),
    "stmt.order": ("Order", "订单"),
    "stmt.lines": ("Orders settled in the period", "本期结算的订单"),
    "stmt.settled": ("Settled", "结算时间"),
    "stmt.charge": ("Charge", "收费"),
    "stmt.share": ("Your share", "提供方分成"),
    "stmt.platform": ("Platform fee", "平台费"),
    "stmt.network": ("Network", "网络费"),
    "stmt.sla": ("SLA credit", "SLA 赔付"),
    "stmt.net": ("Net", "净收入"),
    "stmt.no_lines": ("No orders settled in this period.", "本期没有结算的订单。"),
    "stmt.empty": ("No payout statements yet.", "暂无结算对账单。"),
    "stmt.rule": (
        "A monthly payout run pays what you earned (your share of each order settled up to the "
        "month's end, less SLA credits) and was not paid yet: closing = opening + earned - paid.",
        "每月付款批次支付截至月末已结算订单中您的分成（扣除 SLA 赔付）中尚未支付的部分："
        "期末 = 期初 + 本期收入 - 本次付款。",
    ),
    # budgets (console/pages_statements.py, the money page's panel)
    "budget.title": ("Budgets", "预算"),
    "budget.rule": (
        "Calendar periods in China Standard Time (UTC+8). An order counts in the period it was "
        "opened: its escrow while open, its charge once settled. A task that would take the "
        "spend past a budget waits until the period ends or the budget is raised.",
        "按北京时间（UTC+8）的自然日、周、月计算。订单计入其创建所在的周期：未结时按托管金额，"
        "结算后按实际收费。超出预算的任务将等待至本期结束或预算提高。",
    ),
    "budget.period": ("Period", "周期"),
    "budget.period.day": ("Day", "日"),
    "budget.period.week": ("Week", "周"),
    "budget.period.month": ("Month", "月"),
    "budget.limit": ("Limit", "限额"),
    "budget.limit_fen": ("Limit (fen)", "限额（分）"),
    "budget.alert_bp": ("Alerts at (basis points of the limit)", "提醒阈值（限额的万分比）"),
    "budget.spent": ("Spent this period", "本期已用"),
    "budget.left": ("Left", "剩余"),
    "budget.alerts": ("Alerts this period", "本期提醒"),
    "budget.no_alerts": ("none yet", "暂无"),
    "budget.until": ("Period ends", "本期结束"),
    "budget.delete": ("Delete", "删除"),
    "budget.set": ("Set a budget", "设置预算"),
    "budget.save": ("Save", "保存"),
    "budget.empty": ("No budgets set.", "尚未设置预算。"),
    "budget.manage": ("Manage budgets", "管理预算"),
    "budget.alert_line": (
        "{period} budget: {percent}% reached ({spent} of {limit})",
        "{period}预算：已达 {percent}%（{spent} / {limit}）",
    ),
    # load forecasts (console/pages_forecasts.py)
    "fc.title": ("Load forecasts", "负载预测"),
    "fc.intro": (
        "Each site's busy devices per hour, counted from the platform's own task events, and "
        "the forecast of the next {hours} hours with its {level}% interval (the same figures as "
        "GET /v1/forecasts and suanli forecast).",
        "各站点每小时的忙碌设备数（由平台自身的任务事件统计），以及未来 {hours} 小时的预测与 "
        "{level}% 区间（与 GET /v1/forecasts 和 suanli forecast 的数值相同）。",
    ),
    "fc.site": ("Site", "站点"),
    "fc.show": ("Show", "查看"),
    "fc.no_sites": ("No site is registered yet.", "尚未登记站点。"),
    "fc.chart": ("Actual vs forecast", "实际与预测"),
    "fc.chart_alt": (
        "Line chart of busy devices per hour: the actual last hours, then the forecast with "
        "its interval; the summary and the hourly table below give the same figures.",
        "每小时忙碌设备数折线图：前段为实际值，后段为预测值及其区间；下方摘要与逐小时表格给出相同数值。",
    ),
    "fc.actual": ("Actual", "实际"),
    "fc.mean": ("Forecast", "预测"),
    "fc.interval": ("{level}% interval", "{level}% 区间"),
    "fc.now": ("now", "现在"),
    "fc.x_axis": ("Hours from now (h)", "距现在（小时）"),
    "fc.y_axis": ("Busy devices", "忙碌设备数"),
    "fc.devices": ("devices", "台"),
    "fc.hour": ("Hour starting (CST)", "时段起点（北京时间）"),
    "fc.offset": ("Hours from now", "距现在（小时）"),
    "fc.table": ("Hourly values", "逐小时数值"),
    "fc.start": ("Forecast from", "预测起点"),
    "fc.history": ("History used", "所用历史"),
    "fc.history_hours": ("{hours} whole hours", "{hours} 个整点小时"),
    "fc.method": ("Method", "方法"),
    "fc.unit": (
        "Busy devices: devices held by running tasks, mean over the hour.",
        "忙碌设备数：运行中任务占用的设备数，按小时取平均。",
    ),
    "fc.summary": (
        "Last hour: {actual} busy devices. Next hour: {mean} forecast, {level}% interval "
        "{lower} to {upper}.",
        "上一小时：{actual} 台忙碌。下一小时预测：{mean} 台，{level}% 区间 {lower} 至 {upper}。",
    ),
    "fc.none": (
        "Too little history to forecast this site: a {hours}-hour forecast needs {need} whole "
        "hours of history (3 days, plus the hours ahead) and this site has {has}. Come back in "
        "{left} hours.",
        "该站点历史数据不足，暂无预测：预测未来 {hours} 小时需要 {need} 个整点小时的历史"
        "（3 天加预测时长），该站点目前只有 {has} 个。请 {left} 小时后再来查看。",
    ),
    "fc.carbon": ("Carbon intensity of the grid", "电网碳强度"),
    "fc.carbon_chart_alt": (
        "Line chart of the grid's carbon intensity per hour in this site's province: the "
        "observed last hours, then the forecast with its interval, which the scheduling pass "
        "defers work on.",
        "该站点所在省份电网每小时碳强度折线图：前段为实测值，后段为预测值及其区间；调度据此延后可延后的任务。",
    ),
    "fc.carbon_none": (
        "No forecast of {province}'s carbon intensity: {why}",
        "暂无{province}碳强度预测：{why}",
    ),
    "fc.carbon_y_axis": ("kg CO2 per kWh", "千克 CO2/千瓦时"),
    "fc.carbon_unit": ("kg/kWh", "千克/千瓦时"),
    "fc.carbon_summary": (
        "{province}, location-based, observed hours from {source}; the forecast starts after "
        "the latest observed hour ({lead} h from now). Its first hour: {mean} kg CO2/kWh, "
        "{level}% interval {lower} to {upper}.",
        "{province}，基于位置，实测数据来源：{source}；"
        "预测从最新实测小时之后开始（距现在 {lead} 小时）。"
        "首个预测小时：{mean} 千克 CO2/千瓦时，{level}% 区间 {lower} 至 {upper}。",
    ),
    "fc.observed": ("Observed", "实测"),
    "fc.no_actual": (
        "No whole hour has passed since this site was registered.",
        "该站点登记后尚未满一个整点小时。",
    ),
}


def translate(key: str, language: str) -> str:
    english, chinese = MESSAGES[key]
    return chinese if language == "zh" else english


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """The cookie's choice; else the browser's first of zh/en; else Chinese."""
    if cookie in LANGUAGES:
        return cookie
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh"
        if tag.startswith("en"):
            return "en"
    return DEFAULT_LANGUAGE


def number(value: float | int | None, language: str, digits: int = 0) -> str:
    """Grouped digits; both locales group by thousands with commas (国标 writes 1,234.5 too)."""
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def money(fen: int | None, language: str) -> str:
    """Integer fen as yuan: ¥1,234.56 (en) / 1,234.56 元 (zh)."""
    if fen is None:
        return "—"
    yuan = (Decimal(fen) / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    text = f"{yuan:,.2f}"
    return f"{text} 元" if language == "zh" else f"¥{text}"


def when(moment: datetime | str | None, language: str) -> str:
    """A moment (or its ISO 8601 text, as in a quote's `starts_at`) in China Standard Time:
    2026年11月27日 19:32 (zh) / 27 Nov 2026 19:32 (en)."""
    if moment is None:
        return "—"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(UTC) + CST
    if language == "zh":
        return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M:%S}"
    return f"{local.day} {local:%b %Y %H:%M:%S}"
